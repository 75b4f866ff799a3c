/**
 * @taskgraph/app-regression: the seed's regression job as a runnable app (the
 * module `taskgraph run regression` loads, and the demo behind `npm start`). The
 * job itself lives in @taskgraph/workloads; it is re-exported here so code that
 * imported it from this package keeps working.
 */
export {
  InjectedFault,
  LINK_CHILDREN,
  LINK_PARENTS,
  META_GRADIENT_READY,
  META_PARAM_READY,
  REGRESSION_LINK_TYPES,
  RegressionTaskBuilder,
  expectedSums,
  getGradient,
  getParameter,
  regressionLinkages,
} from '@taskgraph/workloads';
export type { RegressionFaults, RegressionOptions } from '@taskgraph/workloads';
export { regressionApp } from './app.js';
