/**
 * The zero-compile fast path: an instrumented model with ports at module boundaries
 * ({@link buildPortedModel}), a planner that maps a trace onto port feeds and fetches
 * ({@link planFastPath}), a host evaluator for what is computed around the runs
 * ({@link evalOp}), standalone models of closed modules for module applications
 * ({@link ModuleModels}), and the executor the engine calls ({@link FastExecutor}).
 * @module
 */
export { FastExecutor, compress, type FastStats, type FastExecutorOptions } from './execute.js';
export { planFastPath, explainFastPath, type FastPlan, type PlanResult, type PlanOptions, type ReadBinding, type SetPlan } from './plan.js';
export { buildPortedModel, choosePorts, portKey, sliceOutputToLastPosition, PORTS_FORMAT, type Port, type PortSpec, type PortedModel, type PortedModelOptions } from './ports.js';
export { ModuleModels, moduleClosure, moduleModelProto, MODULE_MODEL_FORMAT, type ModuleModel, type ModuleClosure } from './module-model.js';
export { indexTensor, broadcastTo, castTo, tensorOf, HostEvalError } from '../../ir/eval.js';
export { evalOp, HOST_OPS } from '../../ir/ops.js';
