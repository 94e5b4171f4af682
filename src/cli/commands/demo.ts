import { runPacketCounterDemo } from '../../../examples/packet-counter/demo.js';
import { UsageError } from '../../errors.js';
import type { Command } from '../command.js';

export const demoCommands: Command[] = [
  {
    path: ['demo', 'packet-counter'],
    summary:
      "The tutorial's section 11: a tc packet counter on a veth pair between fresh namespaces, counting pings",
    options: {
      pings: { type: 'string', value: 'n', description: 'pings to send (default 20)' },
    },
    async run({ values, stdout }) {
      const pings = values.pings === undefined ? 20 : Number(values.pings);
      if (!Number.isInteger(pings) || pings < 1 || pings > 10000) {
        throw new UsageError(`--pings: must be a whole number from 1 to 10000, got "${values.pings}"`);
      }
      const total = await runPacketCounterDemo({ pings, log: (l) => stdout.write(`${l}\n`) });
      if (total !== BigInt(pings)) {
        stdout.write(`expected ${pings} packets, counted ${total}\n`);
        return 1;
      }
      stdout.write('Done: every ping was counted by the BPF program; namespaces removed.\n');
      return 0;
    },
  },
];
