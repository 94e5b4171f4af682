import type { Command } from '../command.js';
import { agentCommands, liveCommands } from './agent.js';
import { bpfCommands } from './bpf.js';
import { bpfMapCommands } from './bpf-maps.js';
import { connectivityCommands } from './connectivity.js';
import { demoCommands } from './demo.js';
import { fqdnCommands } from './fqdn.js';
import { hubbleCommands } from './hubble.js';
import { labCommands } from './lab.js';
import { labServerCommands } from './lab-servers.js';
import { observeCommands } from './observe.js';
import { policyCommands } from './policy.js';
import { proxyDnsCommands } from './proxy-dns.js';
import { proxyHttpCommands } from './proxy-http.js';
import { relayCommands } from './relay.js';
import { serviceCommands } from './services.js';
import { uiCommands } from './ui.js';

/** Every subcommand of `hypha`. Each feature area adds its own module here. */
export const commands: readonly Command[] = [
  ...agentCommands,
  ...liveCommands,
  ...bpfCommands,
  ...bpfMapCommands,
  ...connectivityCommands,
  ...demoCommands,
  ...fqdnCommands,
  ...hubbleCommands,
  ...labCommands,
  ...labServerCommands,
  ...observeCommands,
  ...policyCommands,
  ...proxyHttpCommands,
  ...proxyDnsCommands,
  ...relayCommands,
  ...serviceCommands,
  ...uiCommands,
];
