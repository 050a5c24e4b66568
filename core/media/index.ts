export { buildIso, type IsoOptions, type MediaFile } from "./iso9660";
export { buildFloppy, type FloppyOptions } from "./floppy";
export { buildConfigMedia, cloudInitFiles, NOCLOUD_LABEL } from "./config-media";
