// The auto-batching limits of eventrouter.client.EventRouterClient, shared by
// the two Node publishers (grpc/client.mjs, socketio/client.mjs): a call
// takes the emits queued meanwhile, up to MAX_BATCH_SIZE of them and
// MAX_BATCH_BYTES (the client's max_batch_size=512, max_batch_bytes=4 MiB).
// An emit counts as EMIT_BYTES plus its padding (the plan's `pad`): exact
// enough to split padded emits (W2s), and no batch of unpadded ones comes near
// the byte limit. No dependencies, so each peer's own node_modules is enough.

export const MAX_BATCH_SIZE = 512;
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const EMIT_BYTES = 400;

/** The size an emit of the plan counts for in a batch. */
export const emitBytes = (planned) => EMIT_BYTES + (planned.pad ?? 0);

/** Takes the queued items ({size, ...}) for the next call, in order: at least one. */
export function takeBatch(queue) {
  let count = 0;
  let bytes = 0;
  while (count < queue.length && count < MAX_BATCH_SIZE) {
    if (count && bytes + queue[count].size > MAX_BATCH_BYTES) break;
    bytes += queue[count].size;
    count += 1;
  }
  return queue.splice(0, count);
}
