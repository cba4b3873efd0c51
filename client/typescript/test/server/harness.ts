/**
 * What the real-server tests share: the server the Python suite started, its
 * tokens, and small waiting helpers (waits are on events, with a deadline).
 *
 * tests/polyglot/test_typescript_client.py starts `eventrouter serve` in its
 * secure default mode and runs these files with:
 * - ER_TARGET: where to connect (`host:port` for gRPC, a URL for the web listener);
 * - ER_PROTOCOL: grpc | connect | grpc-web;
 * - ER_TOKENS: a JSON file of real JWTs (see `Tokens`);
 * - ER_EVENTROUTER, ER_KEYS_FILE, ER_SERVE_ARGS: for the test that starts (and
 *   kills) a server of its own, with the same keys.
 */

import { readFileSync } from "node:fs";
import {
  createEventRouterClient,
  type EventRouterClient,
  type NodeClientOptions,
  type NodeProtocol,
  type Subscription,
  type SubscriptionEvent,
} from "@eventrouter/client/node";

/** The tokens of one user: one per scope, as Happy would mint them. */
export interface UserTokens {
  user: string;
  sessionS1: string;
  sessionS2: string;
  machineM1: string;
  machineM2: string;
}

export interface Tokens {
  service: string;
  /** Subscribers, by test: each test has a user of its own, so that positions do not mix. */
  users: Record<string, { id: string; tokens: UserTokens }>;
  /** Well-formed JWTs the server must refuse. */
  expired: string;
  badSignature: string;
}

export const TARGET = process.env.ER_TARGET;
export const PROTOCOL = (process.env.ER_PROTOCOL ?? "grpc") as NodeProtocol;
/** Why the tests skip themselves (run outside the Python suite), or undefined. */
export const SKIP =
  TARGET === undefined
    ? "ER_TARGET is not set: run through tests/polyglot/test_typescript_client.py"
    : undefined;

export const tokens: Tokens = SKIP
  ? ({ users: {} } as unknown as Tokens)
  : (JSON.parse(readFileSync(process.env.ER_TOKENS as string, "utf8")) as Tokens);

export function user(name: string): { id: string; tokens: UserTokens } {
  const found = tokens.users[name];
  if (found === undefined) throw new Error(`no tokens for test user ${name}`);
  return found;
}

/** A client of the server under test, with the service token unless told otherwise. */
export function client(options: NodeClientOptions = {}, target = TARGET as string): EventRouterClient {
  const who =
    options.token !== undefined || options.userId !== undefined || options.credentials !== undefined;
  return createEventRouterClient(target, {
    protocol: PROTOCOL,
    ...(who ? {} : { token: tokens.service }),
    ...options,
  });
}

export const DEADLINE_MS = 10_000;

/** The next event of `subscription` that `match` accepts (the others are skipped); fails after a deadline. */
export async function nextMatching<T extends SubscriptionEvent>(
  subscription: Subscription,
  match: (event: SubscriptionEvent) => event is T,
  what: string,
  deadlineMs = DEADLINE_MS,
): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const left = until - Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${deadlineMs} ms`)), Math.max(left, 0));
    });
    try {
      const result = await Promise.race([subscription.next(), timeout]);
      if (result.done) throw new Error(`the subscription ended before ${what}`);
      if (match(result.value)) return result.value;
    } finally {
      clearTimeout(timer);
    }
  }
}

export const isUpdate = (e: SubscriptionEvent): e is Extract<SubscriptionEvent, { type: "update" }> =>
  e.type === "update";
export const isOpened = (e: SubscriptionEvent): e is Extract<SubscriptionEvent, { type: "opened" }> =>
  e.type === "opened";

/** The update ids a subscription yields until (and without) `marker`. */
export async function updatesUntil(subscription: Subscription, marker: string): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const event = await nextMatching(subscription, isUpdate, `update ${marker}`);
    if (event.payload.id === marker) return ids;
    ids.push(event.payload.id);
  }
}

let counter = 0;
/** A fresh update id (ids are the idempotency key: a repeat would be answered as a duplicate). */
export const freshId = (prefix: string): string => `${prefix}-${process.pid}-${Date.now()}-${counter++}`;
