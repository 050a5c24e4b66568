import type { StateStoreApi } from "./api";
import { PostgresStateStore, type PostgresStoreOptions } from "./postgres";
import { isPostgresLocation } from "./postgres-connection";
import { StateStore } from "./store";

export { isPostgresLocation, redactLocation } from "./postgres-connection";

/**
 * Opens the state store at `location`: a `postgres://` or `postgresql://` URL is a PostgreSQL
 * database (pg-native is loaded only then), anything else the path of a SQLite file (or
 * ":memory:"). `options` apply to PostgreSQL only.
 */
export function openStateStore(location: string, options: PostgresStoreOptions = {}): StateStoreApi {
  return isPostgresLocation(location) ? PostgresStateStore.open(location, options) : StateStore.open(location);
}
