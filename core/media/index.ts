export { buildIso, type IsoOptions, type MediaFile } from "./iso9660";
export { buildFloppy, type FloppyOptions } from "./floppy";
