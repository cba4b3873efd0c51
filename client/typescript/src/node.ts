/**
 * @eventrouter/client for Node: everything of the neutral entry, plus transports from
 * `@connectrpc/connect-node` (an optional peer dependency).
 *
 *     import { createEventRouterClient } from "@eventrouter/client/node";
 *     const router = createEventRouterClient("127.0.0.1:50051", { token });
 *
 * `protocol` picks the wire: "grpc" (HTTP/2, the server's gRPC port: the
 * default) or "connect" / "grpc-web" (the server's web listener, HTTP/1.1 by default).
 */

import type { Interceptor, Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { EventRouterClient, type EventRouterClientOptions } from "./client.js";

export * from "./index.js";

export type NodeProtocol = "grpc" | "connect" | "grpc-web";

export interface NodeTransportOptions {
  /** Default "grpc". */
  protocol?: NodeProtocol;
  /** For "connect" and "grpc-web": HTTP/1.1 (default) or HTTP/2. gRPC is always HTTP/2. */
  httpVersion?: "1.1" | "2";
  interceptors?: Interceptor[];
  /**
   * HTTP/2 keepalive ping interval in ms (default 20 s). The server refuses
   * pings more often than every 10 s (`--min-client-ping-interval-s`).
   */
  pingIntervalMs?: number;
}

/** `host:port` (plaintext) or a URL (`http://...`, `https://...`) as the base URL Connect wants. */
export function baseUrl(target: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(target) ? target : `http://${target}`;
}

export function createNodeTransport(target: string, options: NodeTransportOptions = {}): Transport {
  const common = { baseUrl: baseUrl(target), interceptors: options.interceptors ?? [] };
  const h2 = { pingIntervalMs: options.pingIntervalMs ?? 20_000, pingTimeoutMs: 10_000 };
  switch (options.protocol ?? "grpc") {
    case "grpc":
      return createGrpcTransport({ ...common, ...h2 });
    case "connect":
      return options.httpVersion === "2"
        ? createConnectTransport({ ...common, ...h2, httpVersion: "2" })
        : createConnectTransport({ ...common, httpVersion: "1.1" });
    case "grpc-web":
      return options.httpVersion === "2"
        ? createGrpcWebTransport({ ...common, ...h2, httpVersion: "2" })
        : createGrpcWebTransport({ ...common, httpVersion: "1.1" });
    default:
      throw new TypeError(`unknown protocol ${JSON.stringify(options.protocol)}`);
  }
}

export type NodeClientOptions = Omit<EventRouterClientOptions, "transport"> & NodeTransportOptions;

/** A client of the router at `target` (`host:port` or a URL; default `127.0.0.1:50051`). */
export function createEventRouterClient(
  target = "127.0.0.1:50051",
  options: NodeClientOptions = {},
): EventRouterClient {
  const { protocol, httpVersion, interceptors, pingIntervalMs, ...client } = options;
  const transport: NodeTransportOptions = {};
  if (protocol !== undefined) transport.protocol = protocol;
  if (httpVersion !== undefined) transport.httpVersion = httpVersion;
  if (interceptors !== undefined) transport.interceptors = interceptors;
  if (pingIntervalMs !== undefined) transport.pingIntervalMs = pingIntervalMs;
  return new EventRouterClient({ ...client, transport: createNodeTransport(target, transport) });
}
