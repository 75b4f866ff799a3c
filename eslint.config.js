// Type-aware lint: the rule that matters most here is no-floating-promises —
// a forgotten await on a keepalive, a watch or a lock is the classic bug of
// coordination code.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/*.config.*', '**/.turbo/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'warn',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // The code the simulator runs on virtual time (packages/sim) takes time, timers and
    // randomness from its injected Clock only; the simulator's run-time guard catches the
    // rest. A default that reads the platform is marked where it is made.
    files: ['packages/{api,core,coord-memory,transport-local,backend-kit,workloads,topologies}/src/**/*.ts'],
    // The platform's clock itself (systemClock, deferOn's default) lives here.
    ignores: ['packages/api/src/runtime.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: 'take randomness from the Clock (randomOf(clock)): a simulation must replay from its seed' },
        { object: 'Date', property: 'now', message: 'use clock.now() (monotonic) or wallNow(clock) (timestamps)' },
        { object: 'performance', property: 'now', message: 'use clock.now()' },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'use clock.setTimeout' },
        { name: 'setInterval', message: 'use clock.setTimeout' },
        { name: 'setImmediate', message: 'use deferOn(clock, ...)' },
      ],
    },
  },
);
