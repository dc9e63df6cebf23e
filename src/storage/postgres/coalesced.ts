/**
 * `run`, one call at a time: calls that come while it runs are not lost but folded into one more
 * run once it ends, however many came. For work that takes in "everything new since last time"
 * (the log's poll, the doorbell's ring), where one more run answers every call made during the
 * last, and piling up reads or notifications would only load the database.
 */
export function coalesced(run: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  const trigger = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void run().finally(() => {
      running = false;
      if (again) {
        again = false;
        trigger();
      }
    });
  };
  return trigger;
}
