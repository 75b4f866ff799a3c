#!/usr/bin/env node
// The bin npm links: a committed file, because npm links a workspace's bins when it
// installs, before anything is built. It runs the built command.
try {
  await import('../dist/cli.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli.js')) {
    console.error('taskgraph-emulator: the command is not built: run `npm run build` first');
    process.exit(2);
  }
  throw err;
}
