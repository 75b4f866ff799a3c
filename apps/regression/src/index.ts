/**
 * @taskgraph/app-regression: the seed's regression job, as a reusable TaskGraph
 * application (the demo behind `npm start`, and the job of the scenario suites).
 */
export * from './regression.js';
export { regressionApp } from './app.js';
