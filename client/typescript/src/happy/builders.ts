/**
 * Happy's nineteen event builders, under Happy's own names and signatures.
 *
 * Each `build*` takes the same arguments, in the same order, as the function
 * of the same name in Happy Server's `events/eventRouter.ts`, and returns the
 * contract's payload whose `toHappyJson` is exactly what Happy's builder puts
 * on the wire. Each one is written as Happy's builder is (the same object
 * literal, spreads and `|| false` included) and then decoded by the codec, so
 * the two cannot disagree: what the contract does not model (a profile key,
 * GitHub's own keys and key order) travels as `jsonExtras`. A bad argument
 * throws `HappyWireError` naming its place in that JSON (`body.message.seq`).
 *
 * Happy reads the clock (`Date.now()`) for `createdAt` and three ephemerals'
 * `timestamp`, and S3's public URL for the avatar's `url`: the builders
 * exported here do the same; `createHappyBuilders({ now, publicUrl })` returns
 * them with both pinned.
 */

import type { EphemeralPayload, UpdatePayload } from "../gen/eventrouter/v1/events_pb.js";
import { ephemeralFromHappyJson, updateFromHappyJson } from "./codec.js";
import { b64Encode, HappyWireError } from "./values.js";

/** A point in time: a Date (Happy's database rows) or milliseconds since the epoch. */
export type DateLike = Date | number;
/** Any JSON value (message `content`, a feed post's `body`). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json | undefined };

/** The session row `buildNewSessionUpdate` reads. */
export interface SessionRecord {
  id: string;
  seq: number;
  metadata: string;
  metadataVersion: number;
  agentState: string | null;
  agentStateVersion: number;
  dataEncryptionKey: Uint8Array | null;
  active: boolean;
  lastActiveAt: DateLike;
  createdAt: DateLike;
  updatedAt: DateLike;
}

/** The message row `buildNewMessageUpdate` reads. */
export interface MessageRecord {
  id: string;
  seq: number;
  content: Json;
  localId: string | null;
  createdAt: DateLike;
  updatedAt: DateLike;
}

/** The machine row `buildNewMachineUpdate` reads. */
export interface MachineRecord {
  id: string;
  seq: number;
  metadata: string;
  metadataVersion: number;
  daemonState: string | null;
  daemonStateVersion: number;
  dataEncryptionKey: Uint8Array | null;
  active: boolean;
  lastActiveAt: DateLike;
  createdAt: DateLike;
  updatedAt: DateLike;
}

/** What the session and the machine rows share. */
type RowRecord = Omit<SessionRecord, "agentState" | "agentStateVersion">;

/** The artifact row `buildNewArtifactUpdate` reads. */
export interface ArtifactRecord {
  id: string;
  seq: number;
  header: Uint8Array;
  headerVersion: number;
  body: Uint8Array;
  bodyVersion: number;
  dataEncryptionKey: Uint8Array;
  createdAt: DateLike;
  updatedAt: DateLike;
}

/** Happy's `{ value, version }`; `value` null is JSON null. */
export interface Versioned {
  value: string | null;
  version: number;
}

/** A versioned value that is never null (machine metadata, artifact header and body). */
export interface VersionedStringRecord {
  value: string;
  version: number;
}

/** A stored image (the avatar); the builder adds its public `url`. */
export interface ImageRef {
  width: number;
  height: number;
  thumbhash: string;
  path: string;
}

/** A GitHub plan (authenticated profiles only). */
export interface GitHubPlanRecord {
  collaborators: number;
  name: string;
  space: number;
  private_repos: number;
  [key: string]: Json | undefined;
}

/** GitHub's user profile as Happy stores it (GitHub's whole answer: keys beyond these travel too). */
export interface GitHubProfileRecord {
  id: number;
  login: string;
  type: string;
  site_admin: boolean;
  avatar_url: string;
  gravatar_id: string | null;
  name: string | null;
  company: string | null;
  blog: string | null;
  location: string | null;
  email: string | null;
  hireable: boolean | null;
  bio: string | null;
  twitter_username: string | null;
  public_repos: number;
  public_gists: number;
  followers: number;
  following: number;
  created_at: string;
  updated_at: string;
  private_gists?: number;
  total_private_repos?: number;
  owned_private_repos?: number;
  disk_usage?: number;
  collaborators?: number;
  two_factor_authentication?: boolean;
  plan?: GitHubPlanRecord;
  [key: string]: Json | GitHubPlanRecord | undefined;
}

/** Happy's account profile; `buildUpdateAccountUpdate` takes any part of it. */
export interface AccountProfile {
  firstName: string | null;
  lastName: string | null;
  username: string | null;
  avatar: ImageRef | null;
  github: GitHubProfileRecord | null;
  settings: Versioned | null;
  connectedServices: string[];
}

export type RelationshipStatusName = "none" | "requested" | "pending" | "friend" | "rejected";

/** A relationship change. */
export interface RelationshipData {
  uid: string;
  status: RelationshipStatusName;
  timestamp: number;
}

/** A feed post; `body` is any JSON. */
export interface FeedItem {
  id: string;
  body: Json;
  cursor: string;
  createdAt: number;
}

/** One key-value store change; `value` null: the key was deleted (version -1). */
export interface KvChangeRecord {
  key: string;
  value: string | null;
  version: number;
}

/** What Happy's builders read besides their arguments. */
export interface BuilderEnvironment {
  /** Happy's `Date.now()`; default: `Date.now`. */
  now?: () => number;
  /**
   * Happy's `getPublicUrl(path)`, for the avatar's `url`; default:
   * `${S3_PUBLIC_URL}/${path}` from the environment (Node), read at call time.
   */
  publicUrl?: (path: string) => string;
}

function publicUrlFromEnv(path: string): string {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  const base = env?.S3_PUBLIC_URL;
  if (!base) {
    throw new HappyWireError(
      "body.avatar.url",
      "S3_PUBLIC_URL is not set; pass publicUrl to createHappyBuilders",
    );
  }
  return `${base}/${path}`;
}

/** A date as Happy's `date.getTime()`; a number is taken as milliseconds already. */
function ms(value: DateLike, field: string): number {
  if (value instanceof Date) {
    const time = value.getTime();
    if (Number.isNaN(time)) throw new HappyWireError(field, "invalid Date");
    return time;
  }
  return value;
}

/** Bytes as Happy's `Buffer.from(bytes).toString('base64')`. */
function base64(bytes: Uint8Array, field: string): string {
  if (!(bytes instanceof Uint8Array)) throw new HappyWireError(field, "expected a Uint8Array");
  return b64Encode(bytes);
}

/** Happy's builders with their clock and public URL pinned (see `BuilderEnvironment`). */
export function createHappyBuilders(env: BuilderEnvironment = {}) {
  const now = env.now ?? Date.now;
  const publicUrl = env.publicUrl ?? publicUrlFromEnv;
  const update = (updateId: string, updateSeq: number, body: Record<string, unknown>): UpdatePayload =>
    updateFromHappyJson({ id: updateId, seq: updateSeq, body, createdAt: now() });
  const ephemeral = (event: Record<string, unknown>): EphemeralPayload => ephemeralFromHappyJson(event);
  /** new-session and new-machine: one row shape but for the names of the id and the state. */
  const newRow =
    (t: string, idKey: string, stateKey: string, what: string) =>
    (row: RowRecord, state: string | null, stateVersion: number, updateSeq: number, updateId: string) =>
      update(updateId, updateSeq, {
        t,
        [idKey]: row.id,
        seq: row.seq,
        metadata: row.metadata,
        metadataVersion: row.metadataVersion,
        [stateKey]: state,
        [`${stateKey}Version`]: stateVersion,
        dataEncryptionKey: row.dataEncryptionKey
          ? base64(row.dataEncryptionKey, `${what}.dataEncryptionKey`)
          : null,
        active: row.active,
        activeAt: ms(row.lastActiveAt, `${what}.lastActiveAt`),
        createdAt: ms(row.createdAt, `${what}.createdAt`),
        updatedAt: ms(row.updatedAt, `${what}.updatedAt`),
      });
  const newSession = newRow("new-session", "id", "agentState", "session");
  const newMachine = newRow("new-machine", "machineId", "daemonState", "machine");
  /** delete-session, delete-machine, delete-artifact: `{ t, <idKey>: id }`. */
  const deleted =
    (t: string, idKey: string) =>
    (id: string, updateSeq: number, updateId: string): UpdatePayload =>
      update(updateId, updateSeq, { t, [idKey]: id });
  /** update-machine, update-artifact: two versioned strings, each left out when undefined. */
  const versionedPair =
    (t: string, idKey: string, first: string, second: string) =>
    (
      id: string,
      updateSeq: number,
      updateId: string,
      a?: VersionedStringRecord,
      b?: VersionedStringRecord,
    ): UpdatePayload =>
      update(updateId, updateSeq, { t, [idKey]: id, [first]: a, [second]: b });

  return {
    /** `new-session`: a session was created. */
    buildNewSessionUpdate(session: SessionRecord, updateSeq: number, updateId: string): UpdatePayload {
      return newSession(session, session.agentState, session.agentStateVersion, updateSeq, updateId);
    },

    /** `new-message`: a message was appended to a session. */
    buildNewMessageUpdate(
      message: MessageRecord,
      sessionId: string,
      updateSeq: number,
      updateId: string,
    ): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "new-message",
        sid: sessionId,
        message: {
          id: message.id,
          seq: message.seq,
          content: message.content,
          localId: message.localId,
          createdAt: ms(message.createdAt, "message.createdAt"),
          updatedAt: ms(message.updatedAt, "message.updatedAt"),
        },
      });
    },

    /** `update-session`: only the values given are sent (undefined = unchanged). */
    buildUpdateSessionUpdate(
      sessionId: string,
      updateSeq: number,
      updateId: string,
      metadata?: Versioned | null,
      agentState?: Versioned | null,
    ): UpdatePayload {
      return update(updateId, updateSeq, { t: "update-session", id: sessionId, metadata, agentState });
    },

    /** `delete-session`: a session was deleted. */
    buildDeleteSessionUpdate: deleted("delete-session", "sid"),

    /**
     * `update-account`: the profile's keys, spread as Happy spreads them (so a
     * key this contract does not model travels too), the avatar with its `url`.
     */
    buildUpdateAccountUpdate(
      userId: string,
      profile: Partial<AccountProfile>,
      updateSeq: number,
      updateId: string,
    ): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "update-account",
        id: userId,
        ...profile,
        avatar: profile.avatar ? { ...profile.avatar, url: publicUrl(profile.avatar.path) } : undefined,
      });
    },

    /** `new-machine`: a machine was registered. */
    buildNewMachineUpdate(machine: MachineRecord, updateSeq: number, updateId: string): UpdatePayload {
      return newMachine(machine, machine.daemonState, machine.daemonStateVersion, updateSeq, updateId);
    },

    /** `update-machine`: the metadata and/or daemon state given (undefined = unchanged). */
    buildUpdateMachineUpdate: versionedPair("update-machine", "machineId", "metadata", "daemonState"),

    /** `delete-machine` (Happy 2026): a machine was deleted; Happy emits it user-scoped only. */
    buildDeleteMachineUpdate: deleted("delete-machine", "machineId"),

    /** `new-artifact`: an artifact was created. */
    buildNewArtifactUpdate(artifact: ArtifactRecord, updateSeq: number, updateId: string): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "new-artifact",
        artifactId: artifact.id,
        seq: artifact.seq,
        header: base64(artifact.header, "artifact.header"),
        headerVersion: artifact.headerVersion,
        body: base64(artifact.body, "artifact.body"),
        bodyVersion: artifact.bodyVersion,
        dataEncryptionKey: base64(artifact.dataEncryptionKey, "artifact.dataEncryptionKey"),
        createdAt: ms(artifact.createdAt, "artifact.createdAt"),
        updatedAt: ms(artifact.updatedAt, "artifact.updatedAt"),
      });
    },

    /** `update-artifact`: the header and/or body given (undefined = unchanged). */
    buildUpdateArtifactUpdate: versionedPair("update-artifact", "artifactId", "header", "body"),

    /** `delete-artifact`: an artifact was deleted. */
    buildDeleteArtifactUpdate: deleted("delete-artifact", "artifactId"),

    /** `relationship-updated`: the relationship with another user changed. */
    buildRelationshipUpdatedEvent(
      data: RelationshipData,
      updateSeq: number,
      updateId: string,
    ): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "relationship-updated",
        uid: data.uid,
        status: data.status,
        timestamp: data.timestamp,
      });
    },

    /** `new-feed-post`: a post was added to the user's feed. */
    buildNewFeedPostUpdate(feedItem: FeedItem, updateSeq: number, updateId: string): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "new-feed-post",
        id: feedItem.id,
        body: feedItem.body,
        cursor: feedItem.cursor,
        createdAt: feedItem.createdAt,
      });
    },

    /** `kv-batch-update`: keys of the user's key-value store changed (may be none). */
    buildKVBatchUpdateUpdate(changes: KvChangeRecord[], updateSeq: number, updateId: string): UpdatePayload {
      return update(updateId, updateSeq, {
        t: "kv-batch-update",
        changes: changes.map((c) => ({ key: c.key, value: c.value, version: c.version })),
      });
    },

    /** `activity`: a session became active or idle; `thinking` is always sent (false when not given). */
    buildSessionActivityEphemeral(
      sessionId: string,
      active: boolean,
      activeAt: number,
      thinking?: boolean,
    ): EphemeralPayload {
      return ephemeral({ type: "activity", id: sessionId, active, activeAt, thinking: thinking || false });
    },

    /** `machine-activity`: a machine became active or idle. */
    buildMachineActivityEphemeral(machineId: string, active: boolean, activeAt: number): EphemeralPayload {
      return ephemeral({ type: "machine-activity", id: machineId, active, activeAt });
    },

    /** `usage`: token counts and cost in the objects' order, stamped now. */
    buildUsageEphemeral(
      sessionId: string,
      key: string,
      tokens: Record<string, number>,
      cost: Record<string, number>,
    ): EphemeralPayload {
      return ephemeral({ type: "usage", id: sessionId, key, tokens, cost, timestamp: now() });
    },

    /** `machine-status`: a machine's daemon went online or offline, stamped now. */
    buildMachineStatusEphemeral(machineId: string, online: boolean): EphemeralPayload {
      return ephemeral({ type: "machine-status", machineId, online, timestamp: now() });
    },

    /**
     * `session-event` (Happy 2026): a session needs the user, stamped now.
     * `kind` is "done", "permission" or "question" today; any string travels.
     * Happy emits it to `allInterestedInSession(sessionId)`.
     */
    buildSessionEventEphemeral(
      sessionId: string,
      kind: string,
      title: string,
      body: string,
    ): EphemeralPayload {
      return ephemeral({ type: "session-event", sessionId, kind, title, body, timestamp: now() });
    },
  };
}

/** The builders of `createHappyBuilders`, as a type. */
export type HappyBuilders = ReturnType<typeof createHappyBuilders>;

const defaults = createHappyBuilders();

export const {
  buildNewSessionUpdate,
  buildNewMessageUpdate,
  buildUpdateSessionUpdate,
  buildDeleteSessionUpdate,
  buildUpdateAccountUpdate,
  buildNewMachineUpdate,
  buildUpdateMachineUpdate,
  buildDeleteMachineUpdate,
  buildNewArtifactUpdate,
  buildUpdateArtifactUpdate,
  buildDeleteArtifactUpdate,
  buildRelationshipUpdatedEvent,
  buildNewFeedPostUpdate,
  buildKVBatchUpdateUpdate,
  buildSessionActivityEphemeral,
  buildMachineActivityEphemeral,
  buildUsageEphemeral,
  buildMachineStatusEphemeral,
  buildSessionEventEphemeral,
} = defaults;
