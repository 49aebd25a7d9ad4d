// The channel from the decode thread to the main thread: normalized SectionEvents and the few control ops
// around them (connections, rejections), in order, as batches of numbers plus interned strings.
//
// Why not postMessage the events themselves: structured clone costs ~2 µs per event-sized object, as much as
// decoding it. Here an event is 22 doubles, and each distinct string (section types, ids, names, log files,
// which repeat heavily) crosses once; the main thread rebuilds the event from a string table.
import { RESULT_VALUES, type SectionEvent, type EventPhase } from '../events/index.js';

/** Ops that are rare and small enough to go as plain structured-clone objects, in their place in the batch. */
export type ControlOp =
  | { op: 'connected'; key: number; conn: number; info: { id: string; path: string; connectedAt: number } }
  | { op: 'disconnected'; conn: number; reason: 'eof' | 'error' | 'reset' | 'stopped' }
  | { op: 'frameRejected'; conn: number; code: string; detail: string }
  | { op: 'rejected'; conn: number; reason: string; detail: string }
  | { op: 'fieldDropped'; conn: number; reason: string; detail: string };

/** One batch as posted (`nums.buffer` is transferred). */
export interface SourceBatch {
  /** The string table was cleared before this batch's strings were added. */
  reset: boolean;
  /** New table entries, in id order, continuing the table. */
  strings: string[];
  nums: Float64Array;
  controls: ControlOp[];
}

const OP_EVENT = 1;
const OP_CONTROL = 2;
// `logExcerpt` does not cross: only the bridge's NDJSON carries one, and this channel serves reporter sockets,
// whose sections get theirs from the job's log file.
const EVENT_SLOTS = 22;
const NONE = -1;
const PHASES: readonly EventPhase[] = ['init', 'start', 'stop'];
const PHASE_CODE: Readonly<Record<EventPhase, number>> = { init: 0, start: 1, stop: 2 };
const RESULT_CODE = new Map<string, number>(RESULT_VALUES.map((value, i) => [value, i]));
/** Past this many distinct strings the table starts over (unique failure reasons must not grow it forever). */
const MAX_TABLE = 65_536;

/** Decode-thread side: collects ops into the current batch. */
export class SourceBatchWriter {
  private table = new Map<string, number>();
  private strings: string[] = [];
  private controls: ControlOp[] = [];
  private nums: Float64Array;
  private length = 0;
  private reset = false;

  constructor(private readonly initialSlots = 4096) {
    this.nums = new Float64Array(initialSlots);
  }

  get empty(): boolean {
    return this.length === 0;
  }

  /** Events in the current batch (controls count as one). */
  get size(): number {
    return this.length / EVENT_SLOTS;
  }

  event(conn: number, e: SectionEvent): void {
    const at = this.reserve(EVENT_SLOTS);
    const n = this.nums;
    n[at] = OP_EVENT;
    n[at + 1] = conn;
    n[at + 2] = PHASE_CODE[e.phase];
    n[at + 3] = this.string(e.event);
    n[at + 4] = this.string(e.type);
    n[at + 5] = e.seqNum;
    n[at + 6] = e.parentSeqNum ?? Number.NaN;
    n[at + 7] = this.optional(e.id);
    n[at + 8] = this.optional(e.name);
    n[at + 9] = e.startTime ?? Number.NaN;
    n[at + 10] = e.stopTime ?? Number.NaN;
    n[at + 11] = e.runtime ?? Number.NaN;
    n[at + 12] = e.result === undefined ? NONE : (RESULT_CODE.get(e.result.value) ?? NONE);
    n[at + 13] = this.optional(e.result?.reason);
    n[at + 14] = this.optional(e.logfile);
    n[at + 15] = e.xref === undefined ? 0 : 1;
    n[at + 16] = this.optional(e.xref?.file);
    n[at + 17] = e.xref?.line ?? Number.NaN;
    n[at + 18] = this.optional(e.fullid);
    n[at + 19] = e.logRange?.begin ?? Number.NaN;
    n[at + 20] = e.logRange?.size ?? Number.NaN;
    n[at + 21] = this.optional(e.logRange?.file);
  }

  control(op: ControlOp): void {
    const at = this.reserve(EVENT_SLOTS);
    this.nums[at] = OP_CONTROL;
    this.nums[at + 1] = this.controls.length;
    this.controls.push(op);
  }

  /** The batch so far (its buffer is the caller's to transfer), or undefined when nothing was written. */
  take(): SourceBatch | undefined {
    if (this.length === 0) return undefined;
    const batch: SourceBatch = {
      reset: this.reset,
      strings: this.strings,
      nums: this.nums.subarray(0, this.length),
      controls: this.controls,
    };
    this.reset = false;
    this.strings = [];
    this.controls = [];
    this.nums = new Float64Array(this.initialSlots);
    this.length = 0;
    if (this.table.size > MAX_TABLE) {
      this.table.clear();
      this.reset = true;
    }
    return batch;
  }

  private reserve(slots: number): number {
    if (this.length + slots > this.nums.length) {
      const grown = new Float64Array(Math.max(this.nums.length * 2, this.length + slots));
      grown.set(this.nums.subarray(0, this.length));
      this.nums = grown;
    }
    const at = this.length;
    this.length += slots;
    return at;
  }

  private optional(value: string | undefined): number {
    return value === undefined ? NONE : this.string(value);
  }

  private string(value: string): number {
    let id = this.table.get(value);
    if (id === undefined) {
      id = this.table.size;
      this.table.set(value, id);
      this.strings.push(value);
    }
    return id;
  }
}

export interface SourceBatchVisitor {
  event(conn: number, event: SectionEvent): void;
  control(op: ControlOp): void;
}

/** Main-thread side: the string table that batches extend, and the ops of each batch in order. */
export class SourceBatchReader {
  private table: string[] = [];

  read(batch: SourceBatch, visit: SourceBatchVisitor): void {
    if (batch.reset) this.table = [];
    for (const s of batch.strings) this.table.push(s);
    const n = batch.nums;
    for (let at = 0; at + EVENT_SLOTS <= n.length; at += EVENT_SLOTS) {
      if (n[at] === OP_CONTROL) {
        const op = batch.controls[n[at + 1]!];
        if (op !== undefined) visit.control(op);
        continue;
      }
      visit.event(n[at + 1]!, this.event(n, at));
    }
  }

  private event(n: Float64Array, at: number): SectionEvent {
    const e: SectionEvent = {
      phase: PHASES[n[at + 2]!] ?? 'stop',
      event: this.string(n[at + 3]!),
      type: this.string(n[at + 4]!),
      seqNum: n[at + 5]!,
    };
    const parent = n[at + 6]!;
    if (!Number.isNaN(parent)) e.parentSeqNum = parent;
    const id = n[at + 7]!;
    if (id !== NONE) e.id = this.string(id);
    const name = n[at + 8]!;
    if (name !== NONE) e.name = this.string(name);
    const start = n[at + 9]!;
    if (!Number.isNaN(start)) e.startTime = start;
    const stop = n[at + 10]!;
    if (!Number.isNaN(stop)) e.stopTime = stop;
    const runtime = n[at + 11]!;
    if (!Number.isNaN(runtime)) e.runtime = runtime;
    const result = RESULT_VALUES[n[at + 12]!];
    if (result !== undefined) {
      const reason = n[at + 13]!;
      e.result = reason === NONE ? { value: result } : { value: result, reason: this.string(reason) };
    }
    const logfile = n[at + 14]!;
    if (logfile !== NONE) e.logfile = this.string(logfile);
    if (n[at + 15] === 1) {
      const file = n[at + 16]!;
      const line = n[at + 17]!;
      e.xref = {};
      if (file !== NONE) e.xref.file = this.string(file);
      if (!Number.isNaN(line)) e.xref.line = line;
    }
    const fullid = n[at + 18]!;
    if (fullid !== NONE) e.fullid = this.string(fullid);
    const logBegin = n[at + 19]!;
    if (!Number.isNaN(logBegin)) {
      e.logRange = { file: this.string(n[at + 21]!), begin: logBegin, size: n[at + 20]! };
    }
    return e;
  }

  private string(id: number): string {
    return this.table[id] ?? '';
  }
}
