//! Routes: from a request's method and URL to the limits it takes and its cost.

use std::collections::HashMap;
use std::sync::Arc;

use regex_lite::Regex;
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::config::{Config, QueryPolicy, RouteCost, RouteLimit};
use crate::error::RequestError;
use crate::event::{Endpoint, EventEndpoint};
use crate::limit::Limit;
use crate::request::Target;

/// Index of a limit in the controller's limit table.
pub(crate) type LimitIdx = u16;

/// The cost a request asks of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    pub(crate) limit: LimitIdx,
    pub(crate) cost: u64,
}

/// A request's needs, sorted by limit, one entry per limit, costs above zero.
/// Inline up to 3 limits (a global window, the route's own, a concurrency limit): the admission and
/// the in-flight entry then stay under 128 bytes, which the compiler copies inline.
pub(crate) type Needs = SmallVec<[Need; 3]>;

#[derive(Debug)]
pub(crate) struct Route {
    /// Also what events show for requests made by this route's name: inline up to 23 bytes, so an
    /// event copies it instead of moving a reference count.
    pub(crate) name: SmolStr,
    method: Option<String>,
    path: Regex,
    /// Every limit the route takes (global ones included), sorted, with how each is costed:
    /// resolving a request is filling in its cost, no search and no sort.
    template: Template,
    /// What a request by this route's name takes at the route's own cost (no query to read).
    needs_by_name: Needs,
    budgets: Budgets,
    cost: RouteCost,
}

/// How a limit is costed for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Costed {
    /// The request's cost.
    Request,
    /// A fixed cost from the route (or 1 for concurrency: it counts requests).
    Fixed(u64),
}

type Template = SmallVec<[(LimitIdx, Costed); 4]>;

/// Budget limits a request reports on.
/// The budget limits a response may report on: none for most requests, and then one word (the
/// in-flight entry and the admission stay small enough to be copied inline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Budgets(Option<Box<[LimitIdx]>>);

impl Budgets {
    pub(crate) fn as_slice(&self) -> &[LimitIdx] {
        self.0.as_deref().unwrap_or(&[])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn contains(&self, limit: &LimitIdx) -> bool {
        self.as_slice().contains(limit)
    }

    fn push(&mut self, limit: LimitIdx) {
        *self = self.as_slice().iter().copied().chain([limit]).collect();
    }
}

impl FromIterator<LimitIdx> for Budgets {
    fn from_iter<I: IntoIterator<Item = LimitIdx>>(iter: I) -> Self {
        let all: Vec<LimitIdx> = iter.into_iter().collect();
        Budgets((!all.is_empty()).then(|| all.into_boxed_slice()))
    }
}

fn budgets_of(template: &Template, limits: &[Limit]) -> Budgets {
    template.iter().map(|&(l, _)| l).filter(|&l| limits[usize::from(l)].budget().is_some()).collect()
}

fn fill(template: &Template, cost: u64) -> Needs {
    template
        .iter()
        .map(|&(limit, c)| Need { limit, cost: if let Costed::Fixed(f) = c { f } else { cost } })
        .filter(|n| n.cost > 0)
        .collect()
}

/// The compiled routing table.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<Route>,
    /// What a request matching no route takes.
    global: Template,
    global_budgets: Budgets,
    by_limit_name: HashMap<Arc<str>, LimitIdx>,
    query: QueryPolicy,
}

/// A request's target, resolved.
pub(crate) struct Resolved {
    pub(crate) needs: Needs,
    /// Budgets the route names, zero-cost ones included: a response's token fields update them
    /// (Keepa's free `/token` call is how the balance is learnt).
    pub(crate) budgets: Budgets,
    /// What events show: `METHOD /path` (query dropped or redacted), or the route's name.
    pub(crate) endpoint: EndpointRef,
}

/// Whom a request is for, as the controller keeps it until an event names it: a route's shared
/// endpoint by index (no reference count moves on the hot path: an `Arc` clone and its drop are two
/// atomic operations), or an endpoint of its own (a URL, or a list of extra limits).
#[derive(Debug, Clone)]
pub(crate) enum EndpointRef {
    Route(u16),
    NoTarget,
    Own(Arc<Endpoint>),
}

impl Router {
    /// Compiles the routes of an already validated config.
    pub(crate) fn new(config: &Config, limits: &[Limit]) -> Self {
        let by_limit_name: HashMap<Arc<str>, LimitIdx> =
            limits.iter().enumerate().map(|(i, l)| (l.name.clone(), i as LimitIdx)).collect();
        let idx = |name: &str| by_limit_name[name];
        let template = |route: Option<&[RouteLimit]>| -> Template {
            let mut t = Template::new();
            let mut set = |limit: LimitIdx, c: Costed| {
                let c = if limits[usize::from(limit)].counts_requests() { Costed::Fixed(1) } else { c };
                match t.iter_mut().find(|(l, _)| *l == limit) {
                    Some(entry) => entry.1 = c,
                    None => t.push((limit, c)),
                }
            };
            for g in &config.global {
                set(idx(g), Costed::Request);
            }
            for l in route.unwrap_or_default() {
                match l {
                    RouteLimit::Name(n) => set(idx(n), Costed::Request),
                    RouteLimit::WithCost { limit, cost } => set(idx(limit), Costed::Fixed(*cost)),
                }
            }
            t.sort_unstable_by_key(|(l, _)| *l);
            t
        };
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let template = template(Some(&r.limits));
                Route {
                    name: SmolStr::new(&r.name),
                    method: r.method.as_ref().map(|m| m.to_ascii_uppercase()),
                    path: Regex::new(&r.path).expect("validated"),
                    needs_by_name: fill(&template, r.cost.estimate(None)),
                    budgets: budgets_of(&template, limits),
                    template,
                    cost: r.cost.clone(),
                }
            })
            .collect();
        let global = template(None);
        let global_budgets = budgets_of(&global, limits);
        Router { routes, global, global_budgets, by_limit_name, query: config.events.query }
    }

    /// The endpoint an event names.
    /// The metrics' route slot of an endpoint: 0 for no route, `i + 1` for route `i`.
    #[inline]
    pub(crate) fn slot_of(e: &EndpointRef) -> u16 {
        match e {
            EndpointRef::Route(i) => i + 1,
            EndpointRef::NoTarget => 0,
            EndpointRef::Own(e) => e.route_slot,
        }
    }

    /// The routes' names, in slot order (slot `i + 1` is `names()[i]`).
    #[cfg(feature = "metrics")]
    pub(crate) fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    pub(crate) fn endpoint_of(&self, e: &EndpointRef) -> EventEndpoint {
        match e {
            EndpointRef::Route(i) => EventEndpoint::Route(self.routes[usize::from(*i)].name.clone()),
            EndpointRef::NoTarget => EventEndpoint::NoTarget,
            EndpointRef::Own(e) => EventEndpoint::Own(e.clone()),
        }
    }

    pub(crate) fn limit_index(&self, name: &str) -> Option<LimitIdx> {
        self.by_limit_name.get(name).copied()
    }

    /// Resolves a target plus extra named limits and an explicit cost into needs.
    // Inlined into its callers: returned through the stack, the result was read back at offsets
    // its fields were not written at (a store-forwarding stall, ~5 ns of the direct path).
    #[inline(always)]
    pub(crate) fn resolve(
        &self,
        target: &Target,
        extra: &[String],
        cost: Option<u64>,
        limits: &[Limit],
    ) -> Result<Resolved, RequestError> {
        let mut query_string = None;
        let (route, endpoint) = match target {
            Target::Http { method, url } => {
                let (path, query) = split_url(url);
                query_string = query;
                let i = self.routes.iter().position(|r| {
                    r.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method)) && r.path.is_match(path)
                });
                let route = i.map(|i| &self.routes[i]);
                let name = self.endpoint(method, path, query).into_boxed_str();
                let route_slot = i.map_or(0, |i| i as u16 + 1);
                (route, EndpointRef::Own(Arc::new(Endpoint { name, route: route.map(|r| r.name.clone()), route_slot })))
            }
            Target::Route(name) => {
                let i = self
                    .routes
                    .iter()
                    .position(|r| &*r.name == name.as_str())
                    .ok_or_else(|| RequestError::UnknownRoute { route: name.clone() })?;
                (Some(&self.routes[i]), EndpointRef::Route(i as u16))
            }
            Target::None if extra.is_empty() => (None, EndpointRef::NoTarget),
            Target::None => (
                None,
                EndpointRef::Own(Arc::new(Endpoint {
                    name: extra.join("+").into_boxed_str(),
                    route: None,
                    route_slot: 0,
                })),
            ),
        };
        let by_name = matches!(target, Target::Route(_)) && cost.is_none();
        let cost = cost.or_else(|| route.map(|r| r.cost.estimate(query_string))).unwrap_or(1);
        let mut needs = match route {
            // A copy of the slice: SmallVec's `clone` goes element by element (~8 ns here).
            Some(r) if by_name => Needs::from_slice(&r.needs_by_name),
            _ => fill(route.map_or(&self.global, |r| &r.template), cost),
        };
        let mut budgets = route.map_or_else(|| self.global_budgets.clone(), |r| r.budgets.clone());
        if !extra.is_empty() {
            for name in extra {
                let limit = self.limit_index(name).ok_or_else(|| RequestError::UnknownLimit { limit: name.clone() })?;
                let c = if limits[usize::from(limit)].counts_requests() { 1 } else { cost };
                if limits[usize::from(limit)].budget().is_some() && !budgets.contains(&limit) {
                    budgets.push(limit);
                }
                match needs.iter_mut().find(|n| n.limit == limit) {
                    Some(n) => n.cost = c,
                    None => needs.push(Need { limit, cost: c }),
                }
            }
            needs.retain(|n| n.cost > 0);
            needs.sort_unstable_by_key(|n| n.limit);
        }
        Ok(Resolved { needs, budgets, endpoint })
    }

    fn endpoint(&self, method: &str, path: &str, query: Option<&str>) -> String {
        let mut s = String::with_capacity(method.len() + 1 + path.len());
        s.push_str(&method.to_ascii_uppercase());
        s.push(' ');
        s.push_str(if path.is_empty() { "/" } else { path });
        if let (QueryPolicy::Redact, Some(q)) = (self.query, query) {
            s.push('?');
            for (i, pair) in q.split('&').filter(|p| !p.is_empty()).enumerate() {
                if i > 0 {
                    s.push('&');
                }
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                s.push_str(name);
                s.push_str("=REDACTED");
            }
        }
        s
    }
}

/// Splits a full URL or a path into (path, query). Written by hand rather than with the `url`
/// crate: only this split is needed, relative paths must work, and `url`'s IDNA tables would cost
/// the wasm package more than the whole core.
pub(crate) fn split_url(url: &str) -> (&str, Option<&str>) {
    let url = url.split('#').next().unwrap_or("");
    let rest = match url.find("://") {
        // Scheme present only if "://" comes before any '/', '?'.
        Some(i) if !url[..i].contains(['/', '?']) => {
            let after = &url[i + 3..];
            match after.find(['/', '?']) {
                Some(j) => &after[j..],
                None => "",
            }
        }
        _ => url,
    };
    match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls_and_paths() {
        assert_eq!(split_url("https://api.x.io/ws/listings/1?key=k#f"), ("/ws/listings/1", Some("key=k")));
        assert_eq!(split_url("https://api.x.io?key=k"), ("", Some("key=k")));
        assert_eq!(split_url("https://user:pw@api.x.io"), ("", None));
        assert_eq!(split_url("/product?key=abc&asin=B0"), ("/product", Some("key=abc&asin=B0")));
        assert_eq!(split_url("/a/b://c"), ("/a/b://c", None));
    }
}
