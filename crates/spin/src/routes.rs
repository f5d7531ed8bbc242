//! HTTP routes, as Spin matches them (with the same crate, `routefinder`): an exact path, a
//! prefix ending in `/...` that matches the prefix and everything below it, and named segments
//! (`/users/:id`) that match any one segment. Segment by segment, a literal beats a named
//! segment, which beats a wildcard, whatever the order of the triggers. Two triggers with the
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
    /// The route is not a path pattern.
    #[error("trigger {trigger}: route {route} is malformed: {reason}")]
    Malformed {
        /// The trigger.
        trigger: String,
        /// Its route.
        route: String,
        /// What the pattern parser said.
        reason: String,
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

/// A request's route, the part of its path below the route's prefix, and the segments its
/// named segments matched.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    /// The route.
    pub route: &'a Route<T>,
    /// The path below a wildcard route's prefix (`/bar` for `/foo/bar` on `/foo/...`);
    /// empty for an exact route.
    pub path_info: String,
    /// Each named segment of the route and what it matched (`("id", "42")` for `/users/42`
    /// on `/users/:id`), in the route's order.
    pub named: Vec<(String, String)>,
}

/// The routes of an app's HTTP triggers.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<Route<T>>,
    /// Each route's pattern, leading to its index in `routes`.
    finder: routefinder::Router<usize>,
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
        let mut finder = routefinder::Router::new();
        for (trigger, raw, target) in triggers {
            let pattern = pattern_of(&raw);
            let (path, spec) = match &pattern {
                Pattern::Exact(p) => (p.clone(), p.clone()),
                Pattern::Prefix(p) => (p.clone(), format!("{p}/*")),
            };
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
            if let Err(reason) = finder.add(spec, routes.len()) {
                return Err(RouteError::Malformed {
                    trigger,
                    route: raw,
                    reason,
                });
            }
            routes.push(Route {
                raw,
                target,
                trigger,
                pattern,
            });
        }
        Ok(Router { routes, finder })
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
        Ok(Router {
            routes,
            finder: self.finder,
        })
    }

    /// The route `path` goes to, if any: the best match, segment by segment.
    pub fn route(&self, path: &str) -> Option<Match<'_, T>> {
        let found = self.finder.best_match(path)?;
        let route = self.routes.get(*found)?;
        let captures = found.captures();
        let path_info = match (&route.pattern, captures.wildcard()) {
            (Pattern::Prefix(_), Some(below)) => {
                // What the wildcard matched, without its slashes: put them back as the
                // request had them.
                match (below.is_empty(), path.ends_with('/')) {
                    (true, false) => String::new(),
                    (true, true) => "/".to_string(),
                    (false, false) => format!("/{below}"),
                    (false, true) => format!("/{below}/"),
                }
            }
            _ => String::new(),
        };
        let named = captures
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Some(Match {
            route,
            path_info,
            named,
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
    fn a_named_segment_matches_one_segment_and_names_it() {
        let r = router(&["/users/:id", "/users/:id/posts/:post"]);
        let m = r.route("/users/42").unwrap();
        assert_eq!(m.route.target, 0);
        assert_eq!(m.named, [("id".to_string(), "42".to_string())]);
        let m = r.route("/users/7/posts/hello").unwrap();
        assert_eq!(m.route.target, 1);
        assert_eq!(
            m.named,
            [
                ("id".to_string(), "7".to_string()),
                ("post".to_string(), "hello".to_string())
            ]
        );
        assert_eq!(target(&r, "/users"), None);
        assert_eq!(target(&r, "/users/7/posts"), None);
    }

    #[test]
    fn a_literal_segment_beats_a_named_one_which_beats_a_wildcard() {
        let r = router(&["/users/...", "/users/:id", "/users/me"]);
        assert_eq!(target(&r, "/users/me"), Some((2, String::new())));
        assert_eq!(target(&r, "/users/you"), Some((1, String::new())));
        assert_eq!(target(&r, "/users/you/more"), Some((0, "/you/more".into())));
    }

    #[test]
    fn a_named_segment_before_a_wildcard_names_it_and_keeps_the_rest() {
        let r = router(&["/files/:bucket/..."]);
        let m = r.route("/files/photos/2026/x.png").unwrap();
        assert_eq!(m.named, [("bucket".to_string(), "photos".to_string())]);
        assert_eq!(m.path_info, "/2026/x.png");
        assert_eq!(m.route.component_route(), "/files/:bucket");
    }

    #[test]
    fn a_route_without_a_leading_slash_gets_one() {
        let r = router(&["hello"]);
        assert_eq!(target(&r, "/hello"), Some((0, String::new())));
    }
}
