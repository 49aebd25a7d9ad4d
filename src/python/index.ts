// Python's pickle, without Python: the values a pyATS reporter pickles (as plain data), a safe unpickler
// that never runs code, and the small pickler the subscribe request and the demo reporter use.
export {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  isPyDict,
  type PyDict,
  type PyValue,
} from './pyvalues.js';
export { unpickle, UnpickleError, type UnpickleErrorCode } from './unpickle.js';
export { pickle, PickleWriteError, type PickleProtocol } from './pickle-writer.js';
