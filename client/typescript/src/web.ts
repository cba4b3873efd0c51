/**
 * @eventrouter/client for browsers and React Native: everything of the neutral entry,
 * plus transports from `@connectrpc/connect-web` (an optional peer dependency),
 * over `fetch`.
 *
 *     import { createEventRouterClient } from "@eventrouter/client/web";
 *     const router = createEventRouterClient("https://router.example.com");
 *
 * Browsers cannot speak gRPC itself (HTTP trailers), so the router's web
 * listener (`eventrouter serve --web-listen`) serves the Connect protocol
 * (the default here) and gRPC-Web. Subscribing streams the response body: a
 * React Native app needs a `fetch` that streams (pass it as `fetch`).
 */

import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventRouterClient, type EventRouterClientOptions } from "./client.js";

export * from "./index.js";

export type WebProtocol = "connect" | "grpc-web";

export interface WebTransportOptions {
  /** Default "connect". */
  protocol?: WebProtocol;
  interceptors?: Interceptor[];
  /** The fetch to use (default: the global one). */
  fetch?: typeof globalThis.fetch;
}

export function createWebTransport(baseUrl: string, options: WebTransportOptions = {}): Transport {
  const common: Parameters<typeof createConnectTransport>[0] = {
    baseUrl,
    interceptors: options.interceptors ?? [],
  };
  if (options.fetch !== undefined) common.fetch = options.fetch;
  switch (options.protocol ?? "connect") {
    case "connect":
      return createConnectTransport(common);
    case "grpc-web":
      return createGrpcWebTransport(common);
    default:
      throw new TypeError(`unknown protocol ${JSON.stringify(options.protocol)}`);
  }
}

export type WebClientOptions = Omit<EventRouterClientOptions, "transport"> & WebTransportOptions;

/** A client of the router's web listener at `baseUrl` (e.g. `https://router.example.com`). */
export function createEventRouterClient(baseUrl: string, options: WebClientOptions = {}): EventRouterClient {
  const { protocol, interceptors, fetch, ...client } = options;
  const transport: WebTransportOptions = {};
  if (protocol !== undefined) transport.protocol = protocol;
  if (interceptors !== undefined) transport.interceptors = interceptors;
  if (fetch !== undefined) transport.fetch = fetch;
  return new EventRouterClient({ ...client, transport: createWebTransport(baseUrl, transport) });
}
