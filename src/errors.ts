/**
 * The project's error vocabulary. Expected failures are one of these classes; anything
 * else that escapes is a bug. Each layer adds context through `cause` instead of
 * rewriting messages.
 */

/** A kernel or platform feature this machine lacks. Tests skip on it only outside CI. */
export class NotSupportedError extends Error {
  override name = 'NotSupportedError';
}

/** A lookup found nothing under the key. */
export class KeyNotFoundError extends Error {
  override name = 'KeyNotFoundError';
}

/** Input rejected at the edge: names the object, the field path and the reason. */
export class ValidationError extends Error {
  override name = 'ValidationError';
  constructor(
    /** What was being validated, e.g. `CiliumNetworkPolicy production/catalog-l7-policy`. */
    readonly object: string,
    /** Dotted field path, e.g. `spec.ingress[0].toPorts[0].ports[0].port`. */
    readonly field: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${object}: ${field}: ${reason}`, options);
  }
}

/** A command line that cannot be acted on; the CLI exits with status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
