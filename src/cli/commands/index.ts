/** Every command of the CLI. A command is a clipanion class; adding one is one line here. */
import type { CommandClass } from 'clipanion';
import { BackendsCommand } from './backends.ts';
import { BuilddbCommand } from './builddb.ts';
import { EmptydbCommand } from './emptydb.ts';
import { ClassicFetchCommand, FetchCommand } from './fetch.ts';
import { LsCommand } from './ls.ts';
import { StatusCommand } from './status.ts';
import { ServeCommand } from './serve.ts';
import { ClassicStoreCommand, StoreCommand } from './store.ts';
import { VerifyCommand } from './verify.ts';

export const commands: CommandClass[] = [
  FetchCommand,
  StoreCommand,
  StatusCommand,
  VerifyCommand,
  LsCommand,
  BuilddbCommand,
  EmptydbCommand,
  BackendsCommand,
  ClassicFetchCommand,
  ClassicStoreCommand,
  ServeCommand,
];
