//! Who may call what. The caller's role and name come from its verified certificate (read
//! once per connection by the TLS listener); every RPC checks them before doing anything,
//! and a refusal is counted and names the role and the method.

use std::sync::Arc;

use rdmaq_common::tls::{ConnInfo, Identity, Role};
use tonic::{Request, Status};

use crate::cluster::Cluster;

fn deny<T>(
    cluster: &Cluster,
    req: &Request<T>,
    role: &str,
    method: &'static str,
    why: String,
) -> Status {
    cluster.denials.count(role, method);
    let remote = req.extensions().get::<ConnInfo>().and_then(|c| c.remote);
    tracing::warn!(role, method, ?remote, reason = %why, "call refused");
    Status::permission_denied(why)
}

/// The caller of `req`, if it may call `method` in one of `roles`.
fn check<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
    roles: &[Role],
) -> Result<Arc<Identity>, Status> {
    if cluster.insecure {
        return Ok(Arc::new(Identity::insecure()));
    }
    let who = match req.extensions().get::<ConnInfo>().map(|c| &c.identity) {
        Some(Ok(who)) => who.clone(),
        Some(Err(why)) => {
            return Err(deny(
                cluster,
                req,
                "unauthenticated",
                method,
                format!("{method} refused: {why}"),
            ));
        }
        None => {
            return Err(deny(
                cluster,
                req,
                "unauthenticated",
                method,
                format!("{method} refused: the connection carries no identity"),
            ));
        }
    };
    let revoked = cluster
        .applied
        .read()
        .expect("state lock")
        .state
        .revocations
        .refuses(&who);
    if let Some(why) = revoked {
        return Err(deny(
            cluster,
            req,
            who.role.as_str(),
            method,
            format!("{method} refused: {why}"),
        ));
    }
    if !roles.contains(&who.role) {
        let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(deny(
            cluster,
            req,
            who.role.as_str(),
            method,
            format!(
                "role {} ({:?}) may not call {method} (allowed: {})",
                who.role,
                who.name,
                allowed.join(", ")
            ),
        ));
    }
    Ok(who)
}

/// Quota and membership changes.
pub fn admin<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
) -> Result<Arc<Identity>, Status> {
    check(cluster, req, method, &[Role::Admin])
}

/// Reads of usage, quotas, nodes, status and the audit trail.
pub fn reader<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
) -> Result<Arc<Identity>, Status> {
    check(cluster, req, method, &[Role::Admin, Role::Viewer])
}

/// A quota read by an agent (it needs its tenants' caps), an admin or a viewer.
pub fn quota_reader<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
) -> Result<Arc<Identity>, Status> {
    check(
        cluster,
        req,
        method,
        &[Role::Admin, Role::Viewer, Role::Agent],
    )
}

/// An agent acting for `node`: its certificate must name that node.
pub fn agent_for<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
    node: &str,
) -> Result<Arc<Identity>, Status> {
    let who = check(cluster, req, method, &[Role::Agent])?;
    if !cluster.insecure && who.name != node {
        return Err(deny(
            cluster,
            req,
            "agent",
            method,
            format!(
                "role agent ({:?}) may not call {method} for node {node:?}: its certificate is for node {:?}",
                who.name, who.name
            ),
        ));
    }
    Ok(who)
}

/// Raft traffic and forwarded requests between members.
pub fn member<T>(
    cluster: &Cluster,
    req: &Request<T>,
    method: &'static str,
) -> Result<Arc<Identity>, Status> {
    check(cluster, req, method, &[Role::Member])
}
