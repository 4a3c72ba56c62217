//! The HTTP client of the control API, used by every CLI command.
//!
//! Failures are turned into sentences that say what to check: a server that cannot be
//! reached, a credential that was refused, or the server's own error message (Clever's
//! `message` field), which already says what to do.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::profile::ProfileFile;
use crate::wire::{
    ApiError, Application, ApplicationPatch, IssuedToken, Namespace, NewApplication, NewInstance,
    NewOrganisation, NewTcpRedir, NewTcpRedirBatch, NewToken, Organisation, Protocol, SettingsPatch,
    TcpRedir, TcpRedirBatch, TokenInfo,
};

/// The kinds of failure a script may want to tell apart, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The command line asks for something that cannot be (found before any request, as
    /// clap finds its own usage errors): exit 2.
    Usage,
    /// What was asked for does not exist (or is not visible to the credential): exit 3.
    NotFound,
    /// The server refused the credential: exit 4.
    Auth,
    /// The server could not be reached: exit 5.
    Unreachable,
}

impl Failure {
    /// The process exit code of this kind of failure (the one list of exit codes is
    /// [`crate::cli::EXIT_CODES`], which takes these).
    pub const fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::NotFound => 3,
            Failure::Auth => 4,
            Failure::Unreachable => 5,
        }
    }

    /// An error of this kind with this message.
    pub fn with(self, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failed { kind: self, message: message.into() })
    }

    /// The kind of the first failure in an error's chain, if any.
    pub fn of(err: &anyhow::Error) -> Option<Failure> {
        err.chain().find_map(|e| e.downcast_ref::<Failed>()).map(|f| f.kind)
    }
}

/// An error that carries its [`Failure`] kind.
#[derive(Debug)]
struct Failed {
    kind: Failure,
    message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// The environment variable naming extra CA certificates (PEM) to trust.
pub const CA_CERT_ENV: &str = "TCP_REDIRS_CA_CERT";

/// Where the CLI talks when nothing says otherwise: the address `serve` listens on by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// A connection to one control server with one credential.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The secret that goes with the token: when there is one, both are sent in Clever's
    /// OAuth PLAINTEXT form, and the server checks both.
    secret: Option<String>,
}

impl Client {
    /// A client for `server` (else the profile's, else the default) with `token` (else the profile's).
    ///
    /// The profile's token is only sent to the profile's own server: a `--server` that
    /// points elsewhere never receives it.
    pub fn new(server: Option<&str>, token: Option<&str>) -> Result<Client> {
        Client::with_timeouts(server, token, Duration::from_secs(5), Duration::from_secs(60))
    }

    /// A client for `server` with this token and its secret, sent together (`login --secret`).
    pub fn with_secret(server: &str, token: &str, secret: &str) -> Result<Client> {
        let mut client = Client::new(Some(server), Some(token))?;
        client.secret = Some(secret.to_owned());
        Ok(client)
    }

    /// As [`Client::new`], with its own limits: `connect` to reach the server, `total` for a
    /// whole call (shell completion must answer at once or not at all).
    pub fn with_timeouts(
        server: Option<&str>,
        token: Option<&str>,
        connect: Duration,
        total: Duration,
    ) -> Result<Client> {
        let file = ProfileFile::load()?;
        let profile = file.active();
        let base = server
            .map(str::to_owned)
            .or_else(|| profile.map(|p| p.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        // The profile's secret goes only with the profile's own token, to its own server.
        let (token, secret) = match token {
            Some(token) => (Some(token.to_owned()), None),
            None => match profile.filter(|p| p.server.trim_end_matches('/') == base) {
                Some(p) => (p.token.clone(), p.token.as_ref().and(p.secret.clone())),
                None => (None, None),
            },
        };
        let mut http = reqwest::Client::builder();
        // A server with a certificate of its own CA (self-signed): trust it explicitly.
        if let Some(path) = std::env::var_os(CA_CERT_ENV).filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path).with_context(|| {
                format!("cannot read {CA_CERT_ENV}={}", std::path::Path::new(&path).display())
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{CA_CERT_ENV} must name a PEM file of certificates"))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .user_agent(concat!("tcp-redirs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect)
            .timeout(total)
            .build()?;
        Ok(Client { http, base, token, secret })
    }

    /// The organisations this credential sees.
    pub async fn organisations(&self) -> Result<Vec<Organisation>> {
        self.call(Method::GET, "/v2/organisations", None::<&()>).await
    }

    /// Creates an organisation (admin).
    pub async fn create_organisation(&self, new: &NewOrganisation) -> Result<Organisation> {
        self.call(Method::POST, "/v2/organisations", Some(new)).await
    }

    /// An organisation's credentials (admin).
    pub async fn tokens(&self, org: &str) -> Result<Vec<TokenInfo>> {
        self.call(Method::GET, &format!("/v2/organisations/{}/tokens", seg(org)), None::<&()>).await
    }

    /// Issues a credential for an organisation (admin).
    pub async fn issue_token(&self, org: &str, new: &NewToken) -> Result<IssuedToken> {
        self.call(Method::POST, &format!("/v2/organisations/{}/tokens", seg(org)), Some(new)).await
    }

    /// Revokes a credential (admin).
    pub async fn revoke_token(&self, org: &str, id: &str) -> Result<TokenInfo> {
        self.call(Method::DELETE, &format!("/v2/organisations/{}/tokens/{}", seg(org), seg(id)), None::<&()>)
            .await
    }

    /// A page of the audit trail: `org`'s, or every organisation's (`None`, admin); `query`
    /// is the query string (`limit=20&kind=redirection.added`, `after=ID&wait=25`).
    pub async fn events(&self, org: Option<&str>, query: &str) -> Result<crate::wire::EventPage> {
        let path = match org {
            Some(org) => format!("/v2/organisations/{}/events?{query}", seg(org)),
            None => format!("/v2/events?{query}"),
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// An organisation's webhooks.
    pub async fn webhooks(&self, org: &str) -> Result<Vec<crate::wire::Webhook>> {
        self.call(Method::GET, &format!("/v2/organisations/{}/webhooks", seg(org)), None::<&()>).await
    }

    /// Registers a webhook; the answer holds its secret, shown this once.
    pub async fn create_webhook(
        &self,
        org: &str,
        new: &crate::wire::NewWebhook,
    ) -> Result<crate::wire::CreatedWebhook> {
        self.call(Method::POST, &format!("/v2/organisations/{}/webhooks", seg(org)), Some(new)).await
    }

    /// Removes a webhook.
    pub async fn remove_webhook(&self, org: &str, id: &str) -> Result<crate::wire::Webhook> {
        self.call(
            Method::DELETE,
            &format!("/v2/organisations/{}/webhooks/{}", seg(org), seg(id)),
            None::<&()>,
        )
        .await
    }

    /// The gateway nodes sharing the server's store.
    pub async fn nodes(&self) -> Result<Vec<crate::wire::Node>> {
        self.call(Method::GET, "/v2/nodes", None::<&()>).await
    }

    /// Forgets a node that is gone for good (admin).
    pub async fn forget_node(&self, name: &str) -> Result<crate::wire::Node> {
        self.call(Method::DELETE, &format!("/v2/nodes/{}", seg(name)), None::<&()>).await
    }

    /// The namespaces an organisation may use.
    pub async fn namespaces(&self, org: &str) -> Result<Vec<Namespace>> {
        self.call(Method::GET, &format!("/v2/organisations/{}/namespaces", seg(org)), None::<&()>).await
    }

    /// The applications of an organisation.
    pub async fn applications(&self, org: &str) -> Result<Vec<Application>> {
        self.call(Method::GET, &format!("/v2/organisations/{}/applications", seg(org)), None::<&()>).await
    }

    /// Creates an application.
    pub async fn create_application(&self, org: &str, new: &NewApplication) -> Result<Application> {
        self.call(Method::POST, &format!("/v2/organisations/{}/applications", seg(org)), Some(new)).await
    }

    /// Replaces an application's instances.
    pub async fn set_instances(&self, app: &Application, instances: &[NewInstance]) -> Result<Application> {
        self.call(Method::PUT, &format!("{}/instances", app_path(app)), Some(&instances)).await
    }

    /// Changes an application's settings in place (its health checks).
    pub async fn update_application(
        &self,
        app: &Application,
        patch: &ApplicationPatch,
    ) -> Result<Application> {
        self.call(Method::PATCH, &app_path(app), Some(patch)).await
    }

    /// Removes an application and its redirections.
    pub async fn remove_application(&self, app: &Application) -> Result<Application> {
        self.call(Method::DELETE, &app_path(app), None::<&()>).await
    }

    /// An application's redirections of `protocol`.
    pub async fn redirections(&self, app: &Application, protocol: Protocol) -> Result<Vec<TcpRedir>> {
        let path = format!("{}/{}", app_path(app), protocol.collection());
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Adds a redirection of `protocol`.
    pub async fn add_redirection(
        &self,
        app: &Application,
        protocol: Protocol,
        body: &NewTcpRedir,
    ) -> Result<TcpRedir> {
        self.call(Method::POST, &format!("{}/{}", app_path(app), protocol.collection()), Some(body)).await
    }

    /// Adds many redirections of an organisation's applications at once (at most
    /// [`crate::wire::MAX_BATCH`]); each is made or refused on its own, and the answer says
    /// which, in order.
    pub async fn add_redirections(&self, org: &str, batch: &NewTcpRedirBatch) -> Result<TcpRedirBatch> {
        self.call(Method::POST, &format!("/v2/organisations/{}/tcpRedirs", seg(org)), Some(batch)).await
    }

    /// Removes the redirection of `protocol` on `port` in `namespace`.
    pub async fn remove_redirection(
        &self,
        app: &Application,
        protocol: Protocol,
        port: u16,
        namespace: &str,
    ) -> Result<TcpRedir> {
        let path = format!("{}/{}/{port}?namespace={}", app_path(app), protocol.collection(), seg(namespace));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// Changes the settings of the redirection of `protocol` on `port` in `namespace` in
    /// place.
    pub async fn update_redirection(
        &self,
        app: &Application,
        protocol: Protocol,
        port: u16,
        namespace: &str,
        patch: &SettingsPatch,
    ) -> Result<TcpRedir> {
        let path = format!("{}/{}/{port}?namespace={}", app_path(app), protocol.collection(), seg(namespace));
        self.call(Method::PATCH, &path, Some(patch)).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = match &self.secret {
                Some(secret) => {
                    request.header(reqwest::header::AUTHORIZATION, oauth_plaintext(token, secret))
                }
                None => request.bearer_auth(token),
            };
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                anyhow!("the server at {} answered {path} with unexpected JSON ({e}): is it a tcp-redirs server of the same version?", self.base)
            });
        }
        let message = serde_json::from_slice::<ApiError>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()));
        Err(match status {
            StatusCode::UNAUTHORIZED => Failure::Auth.with(format!(
                "authentication failed at {}: {message}; pass --token or set TCP_REDIRS_TOKEN (a local `tcp-redirs serve` writes its admin token into the `local` profile)",
                self.base
            )),
            StatusCode::NOT_FOUND => Failure::NotFound.with(message),
            _ => anyhow!(message),
        })
    }

    fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        // reqwest's own text ("client error (Connect)") says little; the root cause says it all.
        let root = std::iter::successors(std::error::Error::source(&err), |e| e.source()).last();
        let cause = root.map(|r| format!(" ({r})")).unwrap_or_default();
        if err.is_connect() || err.is_timeout() {
            Failure::Unreachable.with(format!(
                "cannot reach the control server at {}{cause}: is `tcp-redirs serve` running? (choose the server with --server or TCP_REDIRS_URL)",
                self.base
            ))
        } else if went_away(&err) {
            // A server that stops (SIGTERM) or restarts closes the connections it had not
            // answered yet: it is going away, not answering wrongly.
            Failure::Unreachable.with(format!(
                "the control server at {} closed the connection before answering{cause}: it is stopping or restarting; try again once `tcp-redirs serve` runs",
                self.base
            ))
        } else {
            anyhow!("the request to the control server at {} failed: {err}{cause}", self.base)
        }
    }
}

/// Whether a request failed because the server closed the connection before answering
/// (a reset, or an end of stream instead of the answer).
fn went_away(err: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        // hyper's end of stream in place of the answer (its type is not ours to name here:
        // the client-only build has no hyper of its own).
        if e.to_string().starts_with("connection closed before message completed") {
            return true;
        }
        source = e.source();
    }
    false
}

fn app_path(app: &Application) -> String {
    format!("/v2/organisations/{}/applications/{}", seg(&app.owner_id), seg(&app.id))
}

/// Percent-encodes one path segment or query value.
fn seg(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Clever's OAuth 1.0a PLAINTEXT header for a token and its secret (the consumer part is
/// the program's, empty here: the server checks the token and the secret).
fn oauth_plaintext(token: &str, secret: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    format!(
        r#"OAuth oauth_consumer_key="tcp-redirs", oauth_token="{}", oauth_signature_method="PLAINTEXT", oauth_signature="%26{}""#,
        utf8_percent_encode(token, NON_ALPHANUMERIC),
        utf8_percent_encode(secret, NON_ALPHANUMERIC)
    )
}
