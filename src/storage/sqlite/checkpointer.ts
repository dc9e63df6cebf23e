/**
 * WAL checkpoints on a worker thread. SQLite's automatic checkpoint runs inside the COMMIT
 * that crosses the threshold, so the writer on the event loop stalls while pages are copied
 * and the file is synced: 100 ms and more once the indexes are large. Here a second
 * connection on its own thread checkpoints PASSIVEly (never blocking the writer), and the
 * main connection keeps only a distant automatic checkpoint as a backstop.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../../logger.js";

/** Runs in the worker (CommonJS, as eval workers are); kept small and dependency-free. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driverPath);
const db = new Database(workerData.path, { timeout: 5000, fileMustExist: true });
let timer;
function checkpoint(requestId) {
  try {
    const [result] = db.pragma("wal_checkpoint(PASSIVE)");
    parentPort.postMessage({ type: "checkpoint", requestId, ...result });
  } catch (error) {
    parentPort.postMessage({ type: "error", requestId, message: String((error && error.message) || error) });
  }
}
function tick() {
  checkpoint(undefined);
  timer = setTimeout(tick, workerData.intervalMs);
}
timer = setTimeout(tick, workerData.intervalMs);
parentPort.on("message", (message) => {
  if (message.type === "checkpoint") {
    checkpoint(message.requestId);
  } else if (message.type === "stop") {
    clearTimeout(timer);
    db.close();
    parentPort.close();
  }
});
`;

export interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

export interface CheckpointerOptions {
  path: string;
  intervalMs: number;
  logger: Logger;
}

interface WorkerMessage extends CheckpointResult {
  type: "checkpoint" | "error";
  requestId: number | undefined;
  message?: string;
}

export class BackgroundCheckpointer {
  private readonly worker: Worker;
  private lastResult: CheckpointResult | undefined;
  private runs = 0;
  private nextRequestId = 1;
  private readonly exitResolvers: (() => void)[] = [];
  private readonly pending = new Map<
    number,
    { resolve: (result: CheckpointResult) => void; reject: (error: Error) => void }
  >();

  constructor({ path, intervalMs, logger }: CheckpointerOptions) {
    const driverPath = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, intervalMs, driverPath } });
    // The checkpointer must never keep a process alive that is otherwise done.
    this.worker.unref();
    this.worker.on("message", (message: WorkerMessage) => {
      const waiter = message.requestId === undefined ? undefined : this.pending.get(message.requestId);
      if (message.requestId !== undefined) this.pending.delete(message.requestId);
      if (message.type === "checkpoint") {
        this.runs += 1;
        this.lastResult = { busy: message.busy, log: message.log, checkpointed: message.checkpointed };
        waiter?.resolve(this.lastResult);
      } else {
        logger.warn({ reason: message.message }, "background checkpoint failed; the next one will retry");
        waiter?.reject(new Error(message.message));
      }
    });
    this.worker.on("exit", () => this.exitResolvers.forEach((resolve) => resolve()));
    this.worker.on("error", (error) => {
      logger.error({ err: error }, "checkpoint worker crashed");
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    });
  }

  /** A PASSIVE checkpoint now, on the worker: resolves when it has run. */
  checkpoint(): Promise<CheckpointResult> {
    return new Promise((resolve, reject) => {
      const requestId = this.nextRequestId++;
      this.pending.set(requestId, { resolve, reject });
      this.worker.postMessage({ type: "checkpoint", requestId });
    });
  }

  /**
   * True when the last checkpoint found a large WAL it could not finish: writers should pause
   * for a drain before SQLite's own backstop checkpoint stalls one of their commits.
   */
  isBehind(thresholdFrames: number): boolean {
    const last = this.lastResult;
    return last !== undefined && last.log > thresholdFrames && last.checkpointed < last.log;
  }

  stats(): { runs: number; last: CheckpointResult | undefined } {
    return { runs: this.runs, last: this.lastResult };
  }

  /** Resolves once the worker has closed its connection and exited. */
  readonly exited: Promise<void> = new Promise((resolve) => this.exitResolvers.push(resolve));

  stop(): void {
    this.worker.postMessage({ type: "stop" });
    for (const waiter of this.pending.values()) waiter.reject(new Error("checkpointer stopped"));
    this.pending.clear();
  }
}
