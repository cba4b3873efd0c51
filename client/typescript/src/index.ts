export * from "./happy/builders.js";
export * from "./happy/codec.js";
export { HappyWireError } from "./happy/values.js";
export * from "./gen/eventrouter/v1/events_pb.js";
export * from "./gen/eventrouter/v1/happy_json_pb.js";
export * from "./gen/eventrouter/v1/routing_pb.js";
export * from "./gen/eventrouter/v1/router_service_pb.js";
