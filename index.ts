// The package's public API: the engine-neutral model and the cdktf constructs.
export * from "./core";
export * from "./engines/cdktf";
