/**
 * The Provider contract: the upstream identity provider that authenticates the user. The plugin
 * runs the upstream leg with its own, fresh PKCE verifier, state and nonce for every flow; a
 * provider never sees anything the MCP client sent.
 */

/** Tokens the provider issued to us. They stay on the server, inside the grant. */
export interface UpstreamTokens {
  accessToken: string
  tokenType?: string
  refreshToken?: string
  idToken?: string
  /** Epoch ms. */
  expiresAt?: number
  scope?: string
}

/** The authenticated user, as the provider vouches for them. */
export interface UpstreamUser {
  /** Stable, provider-scoped subject (never an e-mail address, which can change hands). */
  id: string
  email?: string
  /** The plugin keeps `email` (in tokens and `request.mcpAuth`) only when this is true. */
  emailVerified?: boolean
  name?: string
}

export interface AuthorizationUrlInput {
  /** Our callback, `${issuer}/oauth/callback`. */
  redirectUri: string
  state: string
  /** PKCE verifier of the upstream leg; the provider derives the S256 challenge. */
  codeVerifier: string
  /** For OpenID Connect providers: bound into the ID token and checked at exchange. */
  nonce: string
}

export interface ExchangeInput {
  /** The full callback URL as the browser requested it (code, state, iss, ...). */
  callbackUrl: URL
  redirectUri: string
  state: string
  codeVerifier: string
  nonce: string
}

export interface Provider {
  /** Short, stable name, used in logs, metrics labels and grant records ("google", "oidc", "github"). */
  readonly name: string
  /**
   * The OpenID Connect issuer whose `sub` becomes the user id at login (oidcProvider, googleProvider).
   * Enterprise-Managed Authorization trusts ID-JAGs from it by default and maps their `sub` to the
   * same user id. Absent for providers that are not OpenID Connect (GitHub).
   */
  readonly issuer?: string
  authorizationUrl (input: AuthorizationUrlInput): Promise<URL>
  /** Exchange the callback's code, verify the ID token where there is one, and map the user. */
  exchangeCode (input: ExchangeInput): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }>
  /** Refresh upstream tokens. Keeps the old refresh token when the provider does not send a new one. */
  refresh (tokens: UpstreamTokens): Promise<UpstreamTokens>
  /**
   * Deprovisioning: may the user still sign in? Refreshes the tokens where the provider can (else
   * asks with the stored ones) and applies the login policy again. Returns the tokens to keep and
   * the user as the provider sees them now. Throws an UpstreamError: 'invalid_grant',
   * 'access_denied' or 'not_allowed' when the user lost access, 'temporary' to retry later.
   * Without it, the plugin re-checks with `refresh` alone (the policy is not run again).
   * When the upstream refresh succeeded and a later step fails, attach the new tokens to the
   * error with {@link keepRenewedTokens}: the old refresh token is spent, the plugin stores them.
   */
  recheck? (tokens: UpstreamTokens): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }>
  /** Revoke upstream tokens (best effort); absent when the provider offers no revocation. */
  revoke? (tokens: UpstreamTokens): Promise<void>
}

/** Tokens a re-check renewed before it failed, by error; a side table, so nothing logs them with the error. */
const renewed = new WeakMap<object, UpstreamTokens>()

/** Returns `err` carrying the tokens the failed re-check renewed (the caller must keep them). */
export function keepRenewedTokens (err: unknown, tokens: UpstreamTokens): unknown {
  if (typeof err === 'object' && err !== null) renewed.set(err, tokens)
  return err
}

/** The tokens a failed re-check renewed, if any. */
export function renewedTokens (err: unknown): UpstreamTokens | undefined {
  return typeof err === 'object' && err !== null ? renewed.get(err) : undefined
}
