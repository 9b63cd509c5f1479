export { UpstreamError, keepRenewedTokens } from './types.js'
export type {
  AuthorizationUrlInput,
  ExchangeInput,
  Provider,
  UpstreamErrorKind,
  UpstreamTokens,
  UpstreamUser
} from './types.js'
export { oidcProvider } from './oidc.js'
export type { MapUser, OidcClaims, OidcProviderOptions } from './oidc.js'
export { googleProvider, GOOGLE_ISSUER } from './google.js'
export type { GoogleProviderOptions } from './google.js'
export { githubProvider } from './github.js'
export type { GithubProviderOptions } from './github.js'
