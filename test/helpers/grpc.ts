/** Observer gRPC calls as the tests make them: whole streams, unary calls, expected errors. */
import assert from 'node:assert/strict';
import type { CallOptions, ClientReadableStream, requestCallback, ServiceError, status } from '@grpc/grpc-js';
import type { GetFlowsResponsePB } from '../../src/hubble/grpc/proto.js';

/** The responses that carry a flow (not node status or lost events). */
export const flowsOf = (rs: GetFlowsResponsePB[]) => rs.filter((r) => r.flow);

/** Every response of a stream that ends. */
export function all(stream: ClientReadableStream<GetFlowsResponsePB>): Promise<GetFlowsResponsePB[]> {
  return new Promise((resolve, reject) => {
    const out: GetFlowsResponsePB[] = [];
    stream.on('data', (r: GetFlowsResponsePB) => out.push(r));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

/** A unary call as a promise. */
export function unary<T>(start: (cb: requestCallback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => start((err, res) => (err ? reject(err) : resolve(res!))));
}

/** Five seconds from now: no test waits forever on a call. */
export const deadline = (): CallOptions => ({ deadline: Date.now() + 5000 });

/** The call fails with this status code and a message matching `re`. */
export async function rejectsWith(p: Promise<unknown>, code: status, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: ServiceError) => {
    assert.equal(err.code, code, err.details);
    assert.match(err.details, re);
    return true;
  });
}
