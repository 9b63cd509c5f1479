/**
 * Messages between the benchmark runner (test/bench/run.ts) and the server processes it forks
 * (test/bench/server.ts). Every server runs in its own process so that the load generator never
 * shares an event loop with the server it measures.
 */

/** What a forked server process is. */
export type ServerSpec =
  | {
    kind: 'guard'
    store: 'memory' | 'redis'
    redisUrl?: string
    /** Redis store: its local access-token cache (default on); false = every lookup is a GET. */
    redisCache?: boolean
    rateLimit: boolean
    metrics: boolean
  }
  | {
    kind: 'token'
    /** The machine part's IdP (the runner): trusted for ID-JAGs, and the machine client may use jwt-bearer. */
    idp?: { issuer: string, jwksUri: string }
    /** The machine part: the public key of the private_key_jwt machine client (TOKEN_BENCH.machineJwt). */
    machineKey?: Record<string, unknown>
  }
  | {
    kind: 'oidc'
    /** The same private_key_jwt machine client at oidc-provider. */
    machineKey?: Record<string, unknown>
  }

export interface Ready {
  type: 'ready'
  port: number
  /** A valid access token for the guarded route (guard servers). */
  accessToken?: string
  /** Set when this configuration cannot be built (for example an option the plugin does not have). */
  unsupported?: string
}

export type Request =
  | { id: number, op: 'mint', grant: 'refresh' | 'code', n: number }
  | { id: number, op: 'cpu' }
  /** Refresh tokens minted but not used: revoke their grants, so they do not weigh on the rest of the run. */
  | { id: number, op: 'discard', items: string[] }
  /** BENCH_PROFILE: a V8 CPU profile of the server around one measured run (not the minting). */
  | { id: number, op: 'profile-start' }
  | { id: number, op: 'profile-stop', file: string }
  /** Guard servers: time the guard's onRequest hook in process (no HTTP), on a server used for nothing else. */
  | { id: number, op: 'hook-cost' }

export interface Reply {
  type: 'reply'
  id: number
  /** Minted credentials (refresh tokens, or authorization codes). */
  items?: string[]
  /** process.cpuUsage(), user + system, microseconds. */
  cpuMicros?: number
  /** hook-cost: nanoseconds per call of the guard's hook (median of several rounds). */
  nsPerCall?: number
  error?: string
}

/** Shared by both authorization servers of the token-endpoint benchmark. */
export const TOKEN_BENCH = {
  clientId: 'bench-client',
  redirectUri: 'http://127.0.0.1:9/callback',
  resource: 'https://bench.example.com/mcp',
  issuer: 'https://bench.example.com',
  scope: 'mcp:tools',
  /** One PKCE verifier for every code: the server still hashes it on every exchange. */
  codeVerifier: 'bench-verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ',
  /** The confidential client of the machine grants (client_secret_basic), the same on both servers. */
  machine: { clientId: 'bench-machine', secret: 'bench-machine-secret-0123456789abcdef' },
  /** A confidential client that authenticates with private_key_jwt (ES256), the same on both servers. */
  machineJwt: { clientId: 'bench-machine-jwt' }
} as const
