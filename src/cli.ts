#!/usr/bin/env node
/**
 * `tollgate`: the entry point. Puts the runtime's memory settings in force first (runtime.ts: the process
 * may replace itself, before any other module is loaded), then runs the command line (command.ts).
 */
import { applyRuntimeSettings } from './runtime.js';

applyRuntimeSettings();
await import('./command.js');
