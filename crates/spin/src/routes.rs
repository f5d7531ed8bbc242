//! HTTP routes, as Spin matches them: an exact path, or a prefix ending in `/...` that
//! matches the prefix and everything below it. An exact route beats a wildcard one, and the
//! longest wildcard prefix wins, whatever the order of the triggers. Two triggers with the
//! same route are refused, and so is a route under `/.well-known/spin/`, which the host
//! answers itself.

/// The prefix of the routes the host answers itself (`/.well-known/spin/health`).
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// Why a set of routes cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Two triggers have the same route.
    #[error("triggers {first} and {second} both have route {route}: give each its own route")]
    Duplicate {
        /// The route.
        route: String,
        /// The trigger declared first.
        first: String,
        /// The other.
        second: String,
    },
    /// The route has a named segment (`:name`), which kwasi does not match.
    #[error("trigger {trigger}: route {route} has a named segment (`:name`), which kwasi does not support; use a `/...` wildcard")]
    NamedSegment {
        /// The trigger.
        trigger: String,
        /// Its route.
        route: String,
    },
    /// The route is under the host's own prefix.
    #[error("trigger {trigger}: route {route} is under {WELL_KNOWN_PREFIX}, which Spin reserves")]
    Reserved {
        /// The trigger.
        trigger: String,
        /// Its route.
        route: String,
    },
}

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// This path alone.
    Exact(String),
    /// This prefix (empty for `/...`) and every path below it.
    Prefix(String),
}

/// One trigger's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<T> {
    /// The route as the manifest wrote it (`/api/...`).
    pub raw: String,
    /// What the route leads to (a component).
    pub target: T,
    trigger: String,
    pattern: Pattern,
}

impl<T> Route<T> {
    /// The route without its trailing wildcard: `/api` for `/api/...`, empty for `/...`
    /// (Spin's `spin-component-route`).
    pub fn component_route(&self) -> &str {
        match &self.pattern {
            Pattern::Exact(path) | Pattern::Prefix(path) => path,
        }
    }
}

/// A request's route and the part of its path below the route's prefix.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    /// The route.
    pub route: &'a Route<T>,
    /// The path below a wildcard route's prefix (`/bar` for `/foo/bar` on `/foo/...`);
    /// empty for an exact route.
    pub path_info: String,
}

/// The routes of an app's HTTP triggers.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

/// A route with a leading `/` and without a trailing one.
fn sanitize(route: &str) -> String {
    let trimmed = route.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn pattern_of(route: &str) -> Pattern {
    let route = sanitize(route);
    for wildcard in ["/...", "/*"] {
        if let Some(prefix) = route.strip_suffix(wildcard) {
            return Pattern::Prefix(prefix.to_string());
        }
    }
    Pattern::Exact(route)
}

impl<T> Router<T> {
    /// The router of `(trigger id, route, target)` triples.
    pub fn build(
        triggers: impl IntoIterator<Item = (String, String, T)>,
    ) -> Result<Router<T>, RouteError> {
        let mut routes: Vec<Route<T>> = Vec::new();
        for (trigger, raw, target) in triggers {
            let pattern = pattern_of(&raw);
            let path = match &pattern {
                Pattern::Exact(p) | Pattern::Prefix(p) => p.clone(),
            };
            if path.split('/').any(|segment| segment.starts_with(':')) {
                return Err(RouteError::NamedSegment {
                    trigger,
                    route: raw,
                });
            }
            if format!("{path}/").starts_with(WELL_KNOWN_PREFIX) {
                return Err(RouteError::Reserved {
                    trigger,
                    route: raw,
                });
            }
            if let Some(first) = routes.iter().find(|r| r.pattern == pattern) {
                return Err(RouteError::Duplicate {
                    route: raw,
                    first: first.trigger.clone(),
                    second: trigger,
                });
            }
            routes.push(Route {
                raw,
                target,
                trigger,
                pattern,
            });
        }
        Ok(Router { routes })
    }

    /// The same routes, each leading to what `f` makes of its target; the first error of `f`
    /// instead, if any.
    pub fn try_map<U, E>(self, f: impl Fn(&T) -> Result<U, E>) -> Result<Router<U>, E> {
        let mut routes = Vec::with_capacity(self.routes.len());
        for r in self.routes {
            routes.push(Route {
                target: f(&r.target)?,
                raw: r.raw,
                trigger: r.trigger,
                pattern: r.pattern,
            });
        }
        Ok(Router { routes })
    }

    /// The route `path` goes to, if any: an exact route, else the wildcard route with the
    /// longest prefix.
    pub fn route(&self, path: &str) -> Option<Match<'_, T>> {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| matches!(&r.pattern, Pattern::Exact(p) if p == trimmed))
        {
            return Some(Match {
                route,
                path_info: String::new(),
            });
        }
        self.routes
            .iter()
            .filter_map(|route| match &route.pattern {
                Pattern::Prefix(prefix) if prefix.is_empty() => Some((route, path)),
                Pattern::Prefix(prefix) => {
                    let rest = path.strip_prefix(prefix.as_str())?;
                    (rest.is_empty() || rest.starts_with('/')).then_some((route, rest))
                }
                Pattern::Exact(_) => None,
            })
            .max_by_key(|(route, _)| route.component_route().len())
            .map(|(route, rest)| Match {
                route,
                path_info: rest.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router<usize> {
        Router::build(
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("t{i}"), r.to_string(), i)),
        )
        .unwrap()
    }

    fn target(router: &Router<usize>, path: &str) -> Option<(usize, String)> {
        router
            .route(path)
            .map(|m| (m.route.target, m.path_info.clone()))
    }

    #[test]
    fn an_exact_route_beats_a_wildcard_one() {
        let r = router(&["/...", "/foo"]);
        assert_eq!(target(&r, "/foo"), Some((1, String::new())));
        assert_eq!(target(&r, "/foo/"), Some((1, String::new())));
        assert_eq!(target(&r, "/foobar"), Some((0, "/foobar".into())));
    }

    #[test]
    fn the_longest_wildcard_prefix_wins_whatever_the_order() {
        let r = router(&["/api/v1/...", "/api/...", "/..."]);
        assert_eq!(target(&r, "/api/v1/x"), Some((0, "/x".into())));
        assert_eq!(target(&r, "/api/v2"), Some((1, "/v2".into())));
        assert_eq!(target(&r, "/api"), Some((1, String::new())));
        assert_eq!(target(&r, "/apix"), Some((2, "/apix".into())));
        assert_eq!(target(&r, "/"), Some((2, "/".into())));
    }

    #[test]
    fn a_wildcard_keeps_the_trailing_slash_of_the_path() {
        let r = router(&["/test/..."]);
        assert_eq!(target(&r, "/test"), Some((0, String::new())));
        assert_eq!(target(&r, "/test/"), Some((0, "/".into())));
        assert_eq!(target(&r, "/test/hello/"), Some((0, "/hello/".into())));
    }

    #[test]
    fn an_unmatched_path_has_no_route() {
        let r = router(&["/a", "/b/..."]);
        assert_eq!(target(&r, "/c"), None);
        assert_eq!(target(&r, "/a/b"), None);
    }

    #[test]
    fn the_component_route_drops_the_wildcard() {
        let r = router(&["/foo/...", "/...", "/bar"]);
        let route = |p| r.route(p).unwrap().route.component_route().to_string();
        assert_eq!(route("/foo/x"), "/foo");
        assert_eq!(route("/x"), "");
        assert_eq!(route("/bar"), "/bar");
    }

    #[test]
    fn two_triggers_on_one_route_are_refused() {
        let err = Router::build([
            ("a".to_string(), "/x/...".to_string(), ()),
            ("b".to_string(), "/x/".to_string(), ()),
            ("c".to_string(), "/x/...".to_string(), ()),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            RouteError::Duplicate {
                route: "/x/...".into(),
                first: "a".into(),
                second: "c".into()
            }
        );
    }

    #[test]
    fn routes_under_the_well_known_prefix_are_refused() {
        let err = Router::build([("a".to_string(), "/.well-known/spin/...".to_string(), ())]);
        assert!(matches!(err, Err(RouteError::Reserved { .. })));
    }

    #[test]
    fn mapping_the_targets_keeps_the_routes() {
        let r = router(&["/a/...", "/b"])
            .try_map(|i| Ok::<_, ()>(i * 10))
            .unwrap();
        assert_eq!(target(&r, "/a/x"), Some((0, "/x".into())));
        assert_eq!(target(&r, "/b"), Some((10, String::new())));
        assert_eq!(
            router(&["/a"])
                .try_map(|_| Err::<usize, _>("no"))
                .unwrap_err(),
            "no"
        );
    }

    #[test]
    fn a_route_without_a_leading_slash_gets_one() {
        let r = router(&["hello"]);
        assert_eq!(target(&r, "/hello"), Some((0, String::new())));
    }
}
