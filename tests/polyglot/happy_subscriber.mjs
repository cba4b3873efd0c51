#!/usr/bin/env node
// A Node.js subscriber that prints each event it receives as Happy's wire JSON
// (happy_wire.mjs), one JSON.stringify line per event, the way a Node bridge
// would hand it to Happy's apps. It shares nothing with the Python side but the
// .proto files. tests/polyglot/test_node_conformance.py emits events the
// contract does not fully model and compares these lines with what it sent.
//
// Environment:
//   ER_TARGET       host:port of the server (required)
//   ER_TOKEN_USER   subscriber JWT; the stream is user-scoped (required)
//   ER_COUNT        how many events to print before exiting (required)
//   PROTO_ROOT      directory holding eventrouter/v1/*.proto (default: the repo's protos/)
//   ER_TIMEOUT_MS   overall budget (default 15000)
//
// Output: first {"opened": "<connection id>"} once the stream is open (emit
// after that line), then one line per update or ephemeral event. Exit status 0
// after ER_COUNT events; 1 on a stream error, a render error or the timeout.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

import { HappyWire, LOADER_OPTIONS } from './happy_wire.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = path.resolve(process.env.PROTO_ROOT || path.join(HERE, '..', '..', 'protos'));
const COUNT = Number(process.env.ER_COUNT);
const BUDGET_MS = Number(process.env.ER_TIMEOUT_MS || 15000);
if (!process.env.ER_TARGET || !process.env.ER_TOKEN_USER || !(COUNT > 0)) {
  console.error('happy_subscriber: ER_TARGET, ER_TOKEN_USER and ER_COUNT are required');
  process.exit(2);
}

const definition = protoLoader.loadSync(['eventrouter/v1/router_service.proto'], {
  ...LOADER_OPTIONS,
  includeDirs: [PROTO_ROOT],
});
const { EventRouterService } = grpc.loadPackageDefinition(definition).eventrouter.v1;
const wire = new HappyWire(definition);

const client = new EventRouterService(process.env.ER_TARGET, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set('authorization', `Bearer ${process.env.ER_TOKEN_USER}`);
const call = client.Subscribe({ scope: { user: {} } }, metadata);

function finish(code, message) {
  if (message) console.error(`happy_subscriber: ${message}`);
  call.cancel();
  client.close();
  process.exit(code);
}

setTimeout(() => finish(1, `timed out after ${BUDGET_MS} ms`), BUDGET_MS);
let printed = 0;
call.on('data', (response) => {
  for (const event of response.events || []) {
    try {
      if (event.event === 'opened') {
        console.log(JSON.stringify({ opened: event.opened.connection_id }));
      } else if (event.event === 'update') {
        console.log(JSON.stringify(wire.renderUpdate(event.update.payload)));
        printed += 1;
      } else if (event.event === 'ephemeral') {
        console.log(JSON.stringify(wire.renderEphemeral(event.ephemeral)));
        printed += 1;
      }
    } catch (err) {
      finish(1, `cannot render ${JSON.stringify(event)}: ${err.message}`);
    }
    if (printed === COUNT) finish(0);
  }
});
call.on('error', (err) => finish(1, `stream ended: ${err.code} ${err.details}`));
call.on('end', () => finish(1, 'stream ended'));
