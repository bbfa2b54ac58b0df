//! The OpenID provider as this server talks to it, through the
//! `openidconnect` crate: discovery, the authorization URL (PKCE S256,
//! state, nonce), the code exchange, the ID token's verification
//! (signature against the provider's published keys, issuer, audience,
//! expiry, nonce) and the userinfo request.
//!
//! The discovery document and keys are fetched for each sign-in rather than
//! cached: sign-ins are rare, and a provider's key rotation then needs no
//! restart. No request follows redirects (the crate's advice against SSRF).

use std::collections::HashMap;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClaimName, CoreClaimType, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    reqwest, AdditionalClaims, AdditionalProviderMetadata, AuthenticationFlow, AuthorizationCode,
    Client, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RequestTokenError, StandardErrorResponse, StandardTokenResponse,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::SsoSettings;

/// Every claim besides the standard ones, so the roles claim can have any
/// name (`[auth.oidc] roles_claim`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: HashMap<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

/// What discovery says beyond the standard fields: whether the provider
/// names itself in every authorization answer (RFC 9207 §3). When it says
/// so, an answer without `iss` did not come from it, as the RFC requires a
/// client to assume (a mix-up attack through another provider).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IssuerInAnswers {
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for IssuerInAnswers {}

type SsoProviderMetadata = ProviderMetadata<
    IssuerInAnswers,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type SsoTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// A client built from discovery: the authorization endpoint is known, the
/// token and userinfo endpoints may be.
type SsoClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    SsoTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why talking to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered nonsense (502).
    #[error("the OpenID provider {issuer} is unavailable: {reason}")]
    Unavailable { issuer: String, reason: String },
    /// The provider refused the code, or what it sent fails verification (400).
    #[error("{0}")]
    Refused(String),
}

/// A redirect to the provider and what the callback will need.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedIn {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// The roles claim, from the ID token or else from userinfo.
    pub roles: Option<Value>,
}

/// The provider of `[auth.oidc]`.
#[derive(Clone)]
pub struct Provider {
    settings: SsoSettings,
    http: reqwest::Client,
}

/// An error with its causes, as one line (the crate's own messages are terse
/// and keep the detail in `source()`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Provider {
    pub fn new(settings: SsoSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { settings, http })
    }

    pub fn settings(&self) -> &SsoSettings {
        &self.settings
    }

    fn unavailable(&self, reason: String) -> ProviderError {
        ProviderError::Unavailable {
            issuer: self.settings.issuer.to_string(),
            reason,
        }
    }

    async fn discover(&self) -> Result<SsoProviderMetadata, ProviderError> {
        SsoProviderMetadata::discover_async(self.settings.issuer.clone(), &self.http)
            .await
            .map_err(|e| self.unavailable(chain(&e)))
    }

    fn client(&self, metadata: SsoProviderMetadata) -> SsoClient {
        Client::from_provider_metadata(
            metadata,
            self.settings.client_id.clone(),
            self.settings.client_secret.clone(),
        )
        .set_redirect_uri(self.settings.redirect_url.clone())
    }

    /// The authorization answer's `iss` (RFC 9207) against the configured
    /// issuer: a different one is refused, and so is none when the
    /// provider's discovery says it always sends one.
    fn check_answer_issuer(
        &self,
        metadata: &SsoProviderMetadata,
        iss: Option<&str>,
    ) -> Result<(), ProviderError> {
        let issuer = self.settings.issuer.as_str();
        match iss {
            Some(iss) if iss != issuer => Err(ProviderError::Refused(format!(
                "the answer comes from issuer {iss}, not {issuer} (the configured provider)"
            ))),
            Some(_) => Ok(()),
            None if metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported
                == Some(true) =>
            {
                Err(ProviderError::Refused(format!(
                    "the answer has no `iss`, which {issuer} says it always sends \
                     (RFC 9207): it did not come from the configured provider"
                )))
            }
            None => Ok(()),
        }
    }

    /// Where to send the browser to sign in.
    pub async fn authorize(&self) -> Result<Authorization, ProviderError> {
        let client = self.client(self.discover().await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.settings.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Check the answer's issuer, exchange the code, verify the ID token,
    /// and read who signed in (asking userinfo for what the ID token leaves
    /// out).
    pub async fn finish(
        &self,
        iss: Option<&str>,
        code: String,
        pkce_verifier: String,
        nonce: String,
    ) -> Result<SignedIn, ProviderError> {
        let metadata = self.discover().await?;
        self.check_answer_issuer(&metadata, iss)?;
        let client = self.client(metadata);
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| self.unavailable(chain(&e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match &e {
                RequestTokenError::ServerResponse(answer) => ProviderError::Refused(format!(
                    "the provider refused the sign-in code: {answer}"
                )),
                _ => self.unavailable(chain(&e)),
            })?;
        let id_token = token.id_token().ok_or_else(|| {
            ProviderError::Refused("the provider's token answer has no ID token".into())
        })?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce))
            .map_err(|e| {
                ProviderError::Refused(format!("the ID token failed verification: {}", chain(&e)))
            })?;
        let mut signed_in = SignedIn {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            roles: claims
                .additional_claims()
                .claims
                .get(&self.settings.roles.name)
                .cloned(),
        };
        let complete = signed_in.email.is_some() && signed_in.roles.is_some();
        if complete || client.user_info_url().is_none() {
            return Ok(signed_in);
        }
        // Providers put only some claims in the ID token when an access
        // token is issued (OpenID Connect Core 5.4); the rest is userinfo's.
        let info = client
            .user_info(token.access_token().clone(), Some(claims.subject().clone()))
            .map_err(|e| self.unavailable(chain(&e)))?
            .request_async::<OtherClaims, _, CoreGenderClaim>(&self.http)
            .await
            .map_err(|e| self.unavailable(format!("userinfo: {}", chain(&e))))?;
        if signed_in.email.is_none() {
            signed_in.email = info.email().map(|e| e.to_string());
            signed_in.email_verified = info.email_verified();
        }
        if signed_in.name.is_none() {
            signed_in.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        }
        if signed_in.roles.is_none() {
            signed_in.roles = info
                .additional_claims()
                .claims
                .get(&self.settings.roles.name)
                .cloned();
        }
        Ok(signed_in)
    }
}
