import type { Command } from '../command.js';

/** Every subcommand of `hypha`. Each feature area adds its own module here. */
export const commands: readonly Command[] = [];
