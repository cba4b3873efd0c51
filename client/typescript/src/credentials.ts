/**
 * Who is calling: the headers each call carries.
 *
 * A token goes as `authorization: Bearer <JWT>`; give a function to fetch a
 * fresh one per call (a subscription then outlives its token's expiry: the
 * router ends the stream with UNAUTHENTICATED, and it reopens at once with
 * the new token, resuming where it stopped). The insecure development mode
 * names the user in `x-eventrouter-user-id` instead.
 */

/** Supplies the headers that identify the caller; asked once per call. */
export interface Credentials {
  headers(): Record<string, string> | Promise<Record<string, string>>;
  /** True when each call may present a new credential (see the module comment). */
  readonly refreshable?: boolean;
}

/** A token, or a function returning the current one. */
export type TokenSource = string | (() => string | Promise<string>);

/** `authorization: Bearer <token>`. */
export function bearerToken(token: TokenSource): Credentials {
  return {
    refreshable: typeof token === "function",
    async headers() {
      const value = typeof token === "function" ? await token() : token;
      return { authorization: `Bearer ${value}` };
    },
  };
}

/** The server's `--insecure` development mode: the caller names its user. */
export function insecureUserId(userId: string): Credentials {
  return { headers: () => ({ "x-eventrouter-user-id": userId }) };
}

/** At most one of these says who calls; none: the client's own (or nothing). */
export interface CredentialOptions {
  token?: TokenSource;
  userId?: string;
  credentials?: Credentials;
}

export function resolveCredentials(
  options: CredentialOptions,
  fallback?: Credentials,
): Credentials | undefined {
  const given = [options.token, options.userId, options.credentials].filter((c) => c !== undefined);
  if (given.length > 1) throw new TypeError("pass at most one of token, userId, credentials");
  if (options.token !== undefined) return bearerToken(options.token);
  if (options.userId !== undefined) return insecureUserId(options.userId);
  return options.credentials ?? fallback;
}
