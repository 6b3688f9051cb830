//! The web console (`gantry serve --console-listen`): server-rendered pages over the
//! controller's live state and store, for halls without Grafana and for auditors.
//!
//! Every asset is compiled into the binary; nothing is fetched from anywhere at run time.
//! Sign-in is by a one-time code from `gantry console login` (an admin call, so proven by
//! the admin's certificate), which becomes a session cookie bound to that admin's name
//! and role (`session.rs`). Pages read through the same admin calls the CLI makes, with
//! the session's role; actions (rollout pause, resume, abort, rollback; cordon) go
//! through them too, so they are authorized and audited exactly as from the CLI, under
//! the admin's name. Every refusal (a forged or expired cookie, a replayed code, a form
//! without its CSRF token, a viewer posting an action) is answered with a page saying
//! why and recorded in the audit log as `console.refused`.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

mod audit;
mod chart;
mod fleet;
mod html;
mod models;
mod node;
mod rollouts;
pub(super) mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_shared::protocol::admin::{self, Role};
use gantry_shared::protocol::{ErrorCode, Response as Answer};
use tokio_util::sync::CancellationToken;

use self::html::Section;
use self::session::{Grant, Session, Sessions};
use super::Shared;

/// The session cookie. `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`: no other site or path can set or read it.
const COOKIE: &str = "__Host-gantry_session";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// What the rest of the controller needs of the console: its address (for sign-in
/// links) and its sessions (where `gantry console login` puts codes).
#[derive(Debug)]
pub(crate) struct Gate {
    pub url: String,
    pub sessions: Sessions,
}

type Query_ = Query<std::collections::HashMap<String, String>>;
type Form_ = Form<std::collections::HashMap<String, String>>;

/// Serves the console on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route("/", get(fleet_page))
        .route("/nodes/{name}", get(node_page))
        .route("/nodes/{name}/{verb}", post(node_action))
        .route("/rollouts", get(rollouts_page))
        .route("/rollouts/{id}", get(rollout_page))
        .route("/rollouts/{id}/{verb}", post(rollout_action))
        .route("/models", get(models_page))
        .route("/models/{name}", get(model_page))
        .route("/kpis", get(kpis_page))
        .route("/audit", get(audit_page))
        .route("/audit/report.json", get(audit_download))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .fallback(not_found)
        .with_state(shared);
    if let Err(e) = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    {
        tracing::error!(error = %e, "the console failed");
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Headers every page carries: no caching of fleet data, no framing, a referrer only
/// to the console itself (a sign-in link's code never leaks to another site, and forms
/// keep their `Origin`, which `no-referrer` would make `null`), and a policy that runs
/// only the console's own script.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html_response(status: StatusCode, body: String) -> Response {
    secure(
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
    )
}

fn redirect(to: &str) -> Response {
    let mut r = (StatusCode::SEE_OTHER, ()).into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r)
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-gantry_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

fn gate(shared: &Shared) -> &Gate {
    shared
        .console
        .as_ref()
        .expect("the console is served only when configured")
}

/// Records a console refusal in the audit log (and the log).
async fn refuse_audit(shared: &Shared, actor: &str, remote: SocketAddr, path: &str, reason: &str) {
    tracing::warn!(actor, %remote, path, reason, "console request refused");
    super::record_audit(
        shared,
        crate::audit::entry(
            actor,
            "console.refused",
            path,
            crate::audit::details([
                ("reason", serde_json::json!(reason)),
                ("remote", serde_json::json!(remote.to_string())),
            ]),
        ),
    )
    .await;
}

/// A refusal page.
fn refusal(status: StatusCode, title: &str, text: &str, clear: bool) -> Response {
    refusal_page(status, title, text, clear, ("/login", "Sign in"))
}

/// A refusal to someone signed in (a viewer's action, a stale form): the way on is
/// back to the console, not to the sign-in page.
fn refusal_signed_in(title: &str, text: &str) -> Response {
    refusal_page(
        StatusCode::FORBIDDEN,
        title,
        text,
        false,
        ("/", "Back to the console"),
    )
}

fn refusal_page(
    status: StatusCode,
    title: &str,
    text: &str,
    clear: bool,
    (href, label): (&str, &str),
) -> Response {
    let main = format!(
        "<div class=\"signin\"><h1>{}</h1><p>{}</p><p><a href=\"{href}\">{label}</a></p></div>",
        html::esc(title),
        html::esc(text).replace('`', "")
    );
    let mut r = html_response(status, html::bare_page(title, &main));
    if clear {
        r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    }
    r
}

/// The signed-in session behind a request, or the answer to give instead: no cookie
/// leads to the sign-in page; a cookie this controller did not issue, or an expired
/// one, is refused, audited, and cleared.
async fn signed_in(
    shared: &Shared,
    headers: &HeaderMap,
    remote: SocketAddr,
    path: &str,
) -> Result<(String, Session), Response> {
    let Some(token) = cookie_of(headers) else {
        if headers.contains_key("x-gantry-live") {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Sign in again.",
                false,
            ));
        }
        return Err(redirect("/login"));
    };
    match gate(shared)
        .sessions
        .session(&token, gantry_net::clock::now_ms())
    {
        Ok(session) => Ok((token, session)),
        Err(why) => {
            refuse_audit(shared, "console", remote, path, &why.to_string()).await;
            Err(refusal(
                StatusCode::UNAUTHORIZED,
                "Sign in again",
                &format!(
                    "{why}. Get a sign-in link with `gantry console login` on a machine with an admin certificate."
                ),
                true,
            ))
        }
    }
}

/// A page's parts, or why there is none.
type Rendered = Result<(String, Option<Section>, String), PageError>;

/// Why a page could not be shown.
#[derive(Debug)]
pub(super) enum PageError {
    NotFound(String),
    Unavailable(String),
}

impl From<Answer> for PageError {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Error(e) if e.code == ErrorCode::NotFound => Self::NotFound(e.message),
            Answer::Error(e) => Self::Unavailable(e.message),
            _ => Self::Unavailable("the controller answered something unexpected".to_owned()),
        }
    }
}

/// Asks the controller `request` as the session's admin, as the CLI would.
pub(super) async fn ask(
    shared: &Arc<Shared>,
    session: &Session,
    request: admin::Request,
) -> Result<admin::Response, PageError> {
    match super::admin::handle(shared, &session.grant.admin, session.grant.role, request).await {
        Answer::Admin(r) => Ok(r),
        other => Err(other.into()),
    }
}

/// A rendered page for a signed-in session: the whole page, or only `<main>` for the
/// live script.
fn finish(
    shared: &Shared,
    headers: &HeaderMap,
    token: &str,
    session: &Session,
    rendered: Rendered,
) -> Response {
    let live = headers.contains_key("x-gantry-live");
    let (status, title, section, mut main) = match rendered {
        Ok((title, section, main)) => (StatusCode::OK, title, section, main),
        Err(PageError::NotFound(m)) => (
            StatusCode::NOT_FOUND,
            "Not found".to_owned(),
            None,
            format!("<h1>Not found</h1><p>{}</p>", html::esc(&m)),
        ),
        Err(PageError::Unavailable(m)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable".to_owned(),
            None,
            format!(
                "<h1>Unavailable</h1><p>{}</p><p>The page tries again by itself.</p>",
                html::esc(&m)
            ),
        ),
    };
    if !live && let Some((good, text)) = gate(shared).sessions.take_flash(token) {
        main = format!("{}{main}", html::notice(&text, good));
    }
    let body = if live {
        main
    } else {
        html::page(&title, section, session, &main)
    };
    html_response(status, body)
}

async fn fleet_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query_,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "/").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = fleet::render(&shared, &query).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn node_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query_,
) -> Response {
    let path = format!("/nodes/{name}");
    let (token, session) = match signed_in(&shared, &headers, remote, &path).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = node::render(&shared, &session, &name, &query).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn rollouts_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "/rollouts").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = rollouts::render_list(&shared, &session).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn rollout_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/rollouts/{id}");
    let (token, session) = match signed_in(&shared, &headers, remote, &path).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = rollouts::render_one(&shared, &session, &id).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn models_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "/models").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = models::render_list(&shared, &session).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn model_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let path = format!("/models/{name}");
    let (token, session) = match signed_in(&shared, &headers, remote, &path).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = models::render_one(&shared, &session, &name).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn kpis_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query_,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "/kpis").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = models::render_kpis(&shared, &session, &query).await;
    finish(&shared, &headers, &token, &session, rendered)
}

async fn audit_page(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query_,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "/audit").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = audit::render(&shared, &session, &query).await;
    finish(&shared, &headers, &token, &session, rendered)
}

/// The auditor's report as a file, signed by the controller (`audit.rs`).
async fn audit_download(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query_,
) -> Response {
    let (_, session) = match signed_in(&shared, &headers, remote, "/audit/report.json").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match audit::download(&shared, &session, &query).await {
        Ok((name, body)) => {
            let mut r = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            secure(r)
        }
        Err(PageError::NotFound(m) | PageError::Unavailable(m)) => {
            html_response(StatusCode::SERVICE_UNAVAILABLE, html::esc(&m))
        }
    }
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (token, session) = match signed_in(&shared, &headers, remote, "").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rendered = Err(PageError::NotFound(
        "There is no page at this address.".to_owned(),
    ));
    finish(&shared, &headers, &token, &session, rendered)
}

/// The sign-in form: a link from `gantry console login` fills the code in; nothing is
/// used until the form is posted (a link previewer or prefetch cannot spend it).
async fn login_form(Query(query): Query_) -> Response {
    let code = query.get("code").map_or("", String::as_str);
    let main = format!(
        "<form class=\"signin\" method=\"post\" action=\"/login\">\
<h1>Sign in to the Gantry console</h1>\
<p class=\"sub\">Run <code>gantry console login</code> where your admin certificate is; open the link it prints, or paste its code here. A code works once, for 5 minutes.</p>\
<label for=\"code\">Sign-in code</label>\
<input type=\"text\" id=\"code\" name=\"code\" value=\"{}\" autocomplete=\"off\" spellcheck=\"false\" required>\
<button class=\"primary\" id=\"sign-in\">Sign in</button></form>",
        html::esc(code)
    );
    html_response(StatusCode::OK, html::bare_page("Sign in", &main))
}

async fn login(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form_,
) -> Response {
    if let Some(refused) = cross_site(&shared, &headers, remote, "/login").await {
        return refused;
    }
    let code = form.get("code").map_or("", String::as_str);
    let sessions = &gate(&shared).sessions;
    match sessions.redeem(code, gantry_net::clock::now_ms()) {
        Ok((token, session)) => {
            let Grant { admin, role } = &session.grant;
            tracing::info!(admin = %admin, role = role.as_str(), %remote, "console sign-in");
            super::record_audit(
                &shared,
                crate::audit::entry(
                    admin.as_str(),
                    "console.sign_in",
                    admin.as_str(),
                    crate::audit::details([
                        ("role", serde_json::json!(role.as_str())),
                        ("remote", serde_json::json!(remote.to_string())),
                        ("expires_at_ms", serde_json::json!(session.expires_at_ms)),
                    ]),
                ),
            )
            .await;
            let mut r = redirect("/");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                sessions.lifetime().as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err((why, grant)) => {
            let actor = grant.map_or_else(|| "console".to_owned(), |g| g.admin);
            refuse_audit(&shared, &actor, remote, "/login", &why.to_string()).await;
            refusal(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &why.to_string(),
                false,
            )
        }
    }
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form_,
) -> Response {
    let (token, session) = match posted(&shared, &headers, remote, "/logout", &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    gate(&shared).sessions.end(&token);
    super::record_audit(
        &shared,
        crate::audit::entry(
            session.grant.admin.as_str(),
            "console.sign_out",
            session.grant.admin.as_str(),
            crate::audit::details([("remote", serde_json::json!(remote.to_string()))]),
        ),
    )
    .await;
    let mut r = redirect("/login");
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    r
}

/// A form posted from another site (the browser says so in `Sec-Fetch-Site` or
/// `Origin`): refused and audited.
async fn cross_site(
    shared: &Shared,
    headers: &HeaderMap,
    remote: SocketAddr,
    path: &str,
) -> Option<Response> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin_ok = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        _ => true,
    };
    if matches!(site, Some("cross-site" | "same-site")) || !origin_ok {
        refuse_audit(
            shared,
            "console",
            remote,
            path,
            "a form posted from another site",
        )
        .await;
        return Some(refusal(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was posted from another site; the console takes actions only from its own pages.",
            false,
        ));
    }
    None
}

/// The session behind a posted form, with its CSRF token checked.
async fn posted(
    shared: &Shared,
    headers: &HeaderMap,
    remote: SocketAddr,
    path: &str,
    form: &std::collections::HashMap<String, String>,
) -> Result<(String, Session), Response> {
    if let Some(refused) = cross_site(shared, headers, remote, path).await {
        return Err(refused);
    }
    let (token, session) = signed_in(shared, headers, remote, path).await?;
    let csrf = form.get("csrf").map_or("", String::as_str);
    if !session::same(csrf, &session.csrf) {
        refuse_audit(
            shared,
            &session.grant.admin,
            remote,
            path,
            "the form's CSRF token is missing or not this session's",
        )
        .await;
        return Err(refusal_signed_in(
            "Refused",
            "This form does not carry this session's token (it came from an old page or another site). Reload the page and try again.",
        ));
    }
    Ok((token, session))
}

/// Runs an operator's action as the session's admin, then goes back to `back` with
/// what it came to. A viewer is refused before anything is asked, and audited.
async fn act(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    remote: SocketAddr,
    path: &str,
    form: &std::collections::HashMap<String, String>,
    back: &str,
    request: Result<admin::Request, String>,
) -> Response {
    let (token, session) = match posted(shared, headers, remote, path, form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let request = match request {
        Ok(r) => r,
        Err(text) => {
            gate(shared).sessions.set_flash(&token, false, text);
            return redirect(back);
        }
    };
    let required = request.required_role();
    if session.grant.role < required {
        let reason = format!(
            "{} is a {}; `{}` needs the {} role",
            session.grant.admin,
            session.grant.role.as_str(),
            request.name(),
            required.as_str()
        );
        refuse_audit(shared, &session.grant.admin, remote, path, &reason).await;
        return refusal_signed_in("Not allowed", &reason);
    }
    let name = request.name();
    let (good, text) =
        match super::admin::handle(shared, &session.grant.admin, session.grant.role, request).await
        {
            Answer::Error(e) => (false, format!("{name} refused: {}", e.message)),
            _ => (true, format!("{name}: done")),
        };
    gate(shared).sessions.set_flash(&token, good, text);
    redirect(back)
}

async fn rollout_action(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    Form(form): Form_,
) -> Response {
    let request = match verb.as_str() {
        "pause" => Ok(admin::Request::RolloutPause { id: id.clone() }),
        "resume" => Ok(admin::Request::RolloutResume { id: id.clone() }),
        "abort" => Ok(admin::Request::RolloutAbort { id: id.clone() }),
        "rollback" => Ok(admin::Request::RolloutRollback { id: id.clone() }),
        other => Err(format!("{other:?} is not a rollout action")),
    };
    let back = format!("/rollouts/{}", html::url(&id));
    let path = format!("/rollouts/{id}/{verb}");
    act(&shared, &headers, remote, &path, &form, &back, request).await
}

async fn node_action(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    Form(form): Form_,
) -> Response {
    let request = match verb.as_str() {
        "cordon" => match form.get("reason").map(|r| r.trim()) {
            Some(reason) if !reason.is_empty() => Ok(admin::Request::NodeCordon {
                node: name.clone(),
                reason: reason.to_owned(),
            }),
            _ => Err("say why the node is cordoned".to_owned()),
        },
        "uncordon" => Ok(admin::Request::NodeUncordon { node: name.clone() }),
        other => Err(format!("{other:?} is not a node action")),
    };
    let back = format!("/nodes/{}", html::url(&name));
    let path = format!("/nodes/{name}/{verb}");
    act(&shared, &headers, remote, &path, &form, &back, request).await
}

/// `gantry console login`: a code for the calling admin, and the link that uses it.
pub(super) async fn issue(shared: &Shared, admin: &str, role: Role) -> Answer {
    let Some(gate) = shared.console.as_ref() else {
        return super::error(
            ErrorCode::Unavailable,
            "the console is off on this controller: start it with `gantry serve --console-listen 127.0.0.1:9402` (or GANTRY_CONSOLE_LISTEN in /etc/default/gantry-controller)",
        );
    };
    let (code, expires_at_ms) = gate.sessions.issue_code(
        Grant {
            admin: admin.to_owned(),
            role,
        },
        gantry_net::clock::now_ms(),
    );
    super::record_audit(
        shared,
        crate::audit::entry(
            admin,
            "console.code_issued",
            admin,
            crate::audit::details([
                ("role", serde_json::json!(role.as_str())),
                ("expires_at_ms", serde_json::json!(expires_at_ms)),
            ]),
        ),
    )
    .await;
    Answer::Admin(admin::Response::ConsoleLogin {
        url: format!("{}/login?code={code}", gate.url),
        code,
        expires_at_ms,
    })
}
