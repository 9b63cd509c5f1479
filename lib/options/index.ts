// The options room: ./schema.ts (what users write, with every default), ./resolve.ts (the one
// resolve step), ./warnings.ts (the start-up warnings), ./config.ts (what the plugin runs on).
export { resolveOptions } from './resolve.js'
export { OptionsSchema, type McpOAuthOptions, type DataOptions, type ResourceOption, type StaticClient } from './schema.js'
export { AUTHORIZATION_SERVER_WELL_KNOWN, PROTECTED_RESOURCE_WELL_KNOWN, type ResolvedConfig, type ResolvedResource, type TrustedIssuer } from './config.js'
export type { RateLimitName } from '../telemetry/options.js'
