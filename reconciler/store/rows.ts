// The intents table's rows as both stores read them (same columns in SQLite and PostgreSQL).
import type { Intent, IntentKind, IntentState } from "./store";

export interface IntentRow {
  id: string;
  kind: IntentKind;
  pool: string;
  vm: string;
  user: string | null;
  state: IntentState;
  attempts: number;
  next_attempt_at: number | null;
  last_error: string | null;
  payload: string | null;
  created_at: number;
  updated_at: number;
}

export const toIntent = (r: IntentRow): Intent => ({
  id: r.id,
  kind: r.kind,
  pool: r.pool,
  vm: r.vm,
  ...(r.user === null ? {} : { user: r.user }),
  state: r.state,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  lastError: r.last_error,
  payload: r.payload,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});
