// The part of pg-native (libpq bindings) the PostgreSQL store and leadership use. npm has no
// @types/pg-native; these signatures follow pg-native 3.9's index.js.
declare module "pg-native" {
  interface TypeParsers {
    getTypeParser(oid: number, format?: string): (text: string) => unknown;
  }
  interface ClientConfig {
    /** How column values are parsed from their text form, by type OID. @default pg-types */
    readonly types?: TypeParsers;
  }
  type Value = string | null;
  type Row = Record<string, unknown>;
  class Client {
    constructor(config?: ClientConfig);
    connectSync(conninfo?: string): void;
    connect(conninfo: string, callback: (error?: Error) => void): void;
    querySync(text: string, values?: readonly Value[]): Row[];
    prepareSync(name: string, text: string, paramCount: number): void;
    executeSync(name: string, values: readonly Value[]): Row[];
    query(text: string, values: readonly Value[], callback: (error: Error | undefined, rows: Row[]) => void): void;
    query(text: string, callback: (error: Error | undefined, rows: Row[]) => void): void;
    /** "I" idle, "T" in a transaction, "E" in a failed transaction, null: busy or the connection is bad. */
    getTransactionStatus(): "I" | "T" | "E" | null;
    end(callback?: () => void): void;
    on(event: "error", listener: (error: Error) => void): this;
  }
  export = Client;
}
