// The soak benchmark's reporters (bench/soak.ts, test/faults/soak.test.ts): realistic pyATS jobs of a chosen size,
// pickled and framed, each served on a fresh Unix socket server the way pyATS gives every job its own, speaking
// pyATS 23.2's request protocol (src/demo/reporter-protocol.ts).
import { createServer, type Server, type Socket } from 'node:net';
import { simulatedJob } from '../src/demo/job.js';
import {
  SectionTree,
  answerRequest,
  unpicklableReply,
  type ClientState,
} from '../src/demo/reporter-protocol.js';
import { encodeFrame, FrameReader, type FrameFormat } from '../src/reporter/framing.js';
import { pickle } from '../src/python/pickle-writer.js';
import type { PyDict, PyValue } from '../src/python/pyvalues.js';
import { unpickle } from '../src/python/unpickle.js';

/** Sections of a simulated job besides its testcases' (suite, task, plugins, common setup/cleanup...). */
const FIXED_SECTIONS = 18;
const SECTIONS_PER_TESTCASE = 5.3;
/** Distinct job names: real labs rerun the same jobs, so label sets stay bounded while runs go on. */
const JOB_NAMES = 20;
const HOUR_MS = 3_600_000;
const BASE_START_MS = Date.UTC(2025, 0, 1);
const WRITE_CHUNK = 64 * 1024;

export interface SoakJob {
  index: number;
  jobId: string;
  format: FrameFormat;
  /** Every event of the job, framed, in one buffer. */
  bytes: Buffer;
  events: number;
  sections: number;
}

/** Testcases that give a seed's job ~`sectionsTarget` sections, found once per (seed, target). */
const testcasesFor = new Map<string, number>();
function testcasesOf(seed: number, sectionsTarget: number): number {
  const key = `${seed}/${sectionsTarget}`;
  let testcases = testcasesFor.get(key);
  if (testcases === undefined) {
    const guess = Math.max(1, Math.round((sectionsTarget - FIXED_SECTIONS) / SECTIONS_PER_TESTCASE));
    const got = sectionsOf(simulatedJob({ seed, testcases: guess }));
    testcases = Math.max(
      1,
      Math.round((guess * (sectionsTarget - FIXED_SECTIONS)) / Math.max(1, got - FIXED_SECTIONS)),
    );
    testcasesFor.set(key, testcases);
  }
  return testcases;
}

function sectionsOf(events: PyDict[]): number {
  return new Set(events.map((event) => event['seq_num'])).size;
}

/** Job `index`: ~`sectionsTarget` sections, its own start time (so its own trace), one of JOB_NAMES names. */
export function soakJob(index: number, sectionsTarget: number, format: FrameFormat = 'chunked'): SoakJob {
  const jobId = `soak_job_${index % JOB_NAMES}`;
  // A job name always runs the same script, as in a lab: its testcases are the same run after run.
  const seed = (index % JOB_NAMES) + 1;
  const events = simulatedJob({
    seed,
    testcases: testcasesOf(seed, sectionsTarget),
    jobId,
    startMs: BASE_START_MS + index * HOUR_MS,
  });
  const frames = events.map((event) => encodeFrame(pickle(event, { protocol: 4 }), format));
  return {
    index,
    jobId,
    format,
    bytes: Buffer.concat(frames),
    events: events.length,
    sections: sectionsOf(events),
  };
}

export interface GeneratorReporter {
  path: string;
  /** Resolves when every job was served and the socket removed. */
  done: Promise<void>;
  close(): Promise<void>;
}

/**
 * A pyATS-like reporter at `path` serving jobs one after another, each on a fresh server (the path is removed
 * between jobs): waits for one subscription (`subscribe_client`, answered None), writes the whole job to it at
 * full speed (respecting backpressure), ends the connection and closes. Other requests get pyATS's answers;
 * get_testsuite says nothing ran yet, so the exporter measures the live stream. `nextJob` returns undefined
 * when there are no more.
 */
export function startGeneratorReporter(
  path: string,
  nextJob: () => SoakJob | undefined,
  onJobSent: (job: SoakJob) => void = () => undefined,
): GeneratorReporter {
  let stopped = false;
  let server: Server | undefined;
  const clients = new Set<Socket>();

  const serveOne = (job: SoakJob): Promise<void> =>
    new Promise((resolve, reject) => {
      const tree = new SectionTree();
      let subscribed = false;
      const reply = (socket: Socket, value: PyValue): void => {
        socket.write(encodeFrame(pickle(value, { protocol: 4, memoize: true }), job.format));
      };
      const s = createServer((socket) => {
        clients.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => clients.delete(socket));
        const reader = new FrameReader({ format: job.format, maxFrameBytes: 1 << 20 });
        const client: ClientState = {};
        socket.on('data', (chunk: Buffer) => {
          let messages: Uint8Array[];
          try {
            messages = reader.push(chunk);
          } catch {
            socket.destroy();
            return;
          }
          for (const message of messages) {
            let request: PyValue;
            try {
              request = unpickle(message);
            } catch {
              reply(socket, unpicklableReply());
              continue;
            }
            const answer = answerRequest(request, client, tree);
            if ('refuse' in answer) {
              reject(new Error(`generator reporter: ${answer.refuse}`));
              socket.destroy();
              return;
            }
            reply(socket, answer.reply);
            if (answer.subscribe !== true || subscribed) continue;
            // One subscription per job; once it ends the path goes away, as when pyATS's job ends.
            subscribed = true;
            void writeAll(socket, job.bytes).then(() => {
              socket.end();
              socket.once('close', () => {
                s.close();
                for (const other of clients) other.destroy();
                onJobSent(job);
                resolve();
              });
            });
          }
        });
      });
      server = s;
      s.once('error', reject);
      s.listen(path);
    });

  const done = (async () => {
    for (let job = nextJob(); job !== undefined && !stopped; job = nextJob()) await serveOne(job);
  })();

  return {
    path,
    done,
    close: async () => {
      stopped = true;
      for (const client of clients) client.destroy();
      await new Promise<void>((resolve) => (server?.listening ? server.close(() => resolve()) : resolve()));
    },
  };
}

async function writeAll(socket: Socket, bytes: Buffer): Promise<void> {
  for (let offset = 0; offset < bytes.length && !socket.destroyed; offset += WRITE_CHUNK) {
    if (!socket.write(bytes.subarray(offset, offset + WRITE_CHUNK))) {
      await new Promise<void>((resolve) => {
        socket.once('drain', resolve);
        socket.once('close', resolve);
      });
    }
  }
}
