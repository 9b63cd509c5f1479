import Type, { type Static } from 'typebox'
import type { ResolvedConfig, ResolvedResource } from '../options/index.js'
import { ASSERTION_ALGORITHMS, JWT_BEARER_GRANT } from '../oauth/jwt.js'
import { ID_JAG_PROFILE } from '../token/grants/jwt-bearer.js'

const StringArray = Type.Array(Type.String())

/** RFC 8414 authorization server metadata. */
export const AuthorizationServerMetadata = Type.Object({
  issuer: Type.String(),
  authorization_endpoint: Type.String(),
  token_endpoint: Type.String(),
  registration_endpoint: Type.Optional(Type.String()),
  revocation_endpoint: Type.Optional(Type.String()),
  introspection_endpoint: Type.Optional(Type.String()),
  scopes_supported: StringArray,
  response_types_supported: StringArray,
  response_modes_supported: StringArray,
  grant_types_supported: StringArray,
  token_endpoint_auth_methods_supported: StringArray,
  token_endpoint_auth_signing_alg_values_supported: StringArray,
  revocation_endpoint_auth_methods_supported: Type.Optional(StringArray),
  revocation_endpoint_auth_signing_alg_values_supported: Type.Optional(StringArray),
  introspection_endpoint_auth_methods_supported: Type.Optional(StringArray),
  introspection_endpoint_auth_signing_alg_values_supported: Type.Optional(StringArray),
  code_challenge_methods_supported: StringArray,
  authorization_response_iss_parameter_supported: Type.Boolean(),
  client_id_metadata_document_supported: Type.Optional(Type.Boolean()),
  authorization_grant_profiles_supported: Type.Optional(StringArray),
  service_documentation: Type.Optional(Type.String())
})

/** RFC 9728 protected resource metadata. */
export const ProtectedResourceMetadata = Type.Object({
  resource: Type.String(),
  authorization_servers: StringArray,
  scopes_supported: StringArray,
  bearer_methods_supported: StringArray,
  resource_name: Type.Optional(Type.String()),
  resource_documentation: Type.Optional(Type.String())
})

/** RFC 8414 authorization server metadata: only what this server actually serves. */
export function authorizationServerMetadata (config: ResolvedConfig): Static<typeof AuthorizationServerMetadata> {
  const metadata: Static<typeof AuthorizationServerMetadata> = {
    issuer: config.issuer,
    authorization_endpoint: config.endpoints.authorization,
    token_endpoint: config.endpoints.token,
    scopes_supported: config.scopes,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    // RFC 8414 §2: the algorithms of a private_key_jwt client assertion.
    token_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    revocation_endpoint: config.endpoints.revocation,
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    revocation_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    introspection_endpoint: config.endpoints.introspection,
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    introspection_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true
  }
  if (config.enterprise.issuers.length > 0) {
    // Enterprise-Managed Authorization: ID-JAGs of a trusted IdP are taken at the token endpoint.
    metadata.grant_types_supported.push(JWT_BEARER_GRANT)
    metadata.authorization_grant_profiles_supported = [ID_JAG_PROFILE]
  }
  if (config.cimd.enabled) metadata.client_id_metadata_document_supported = true
  if (config.registration.mode !== 'off') metadata.registration_endpoint = `${config.issuer}/oauth/register`
  if (config.serviceDocumentation !== undefined) metadata.service_documentation = config.serviceDocumentation
  return metadata
}

/** RFC 9728 protected resource metadata for one resource. */
export function protectedResourceMetadata (config: ResolvedConfig, resource: ResolvedResource): Static<typeof ProtectedResourceMetadata> {
  const metadata: Static<typeof ProtectedResourceMetadata> = {
    resource: resource.resource,
    authorization_servers: [config.issuer],
    scopes_supported: resource.scopes,
    bearer_methods_supported: ['header']
  }
  if (resource.name !== undefined) metadata.resource_name = resource.name
  if (resource.documentation !== undefined) metadata.resource_documentation = resource.documentation
  return metadata
}
