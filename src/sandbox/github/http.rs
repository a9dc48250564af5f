//! HTTP: one handler routes every request, as GitHub's paths go.

use super::*;

pub(super) type Shared = Arc<Mutex<Repo>>;

/// GitHub's `per_page`: 30 unless asked, at most 100.
pub(super) fn per_page(query: &HashMap<String, String>) -> usize {
    query
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100)
}

pub(super) async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut repo = lock(&state);
    let answer = repo.serve(&method, uri.path(), &query, &headers, &body);
    // What a person does between requests (pushes, merges) is theirs.
    repo.caller = Caller::Token;
    answer
}

impl Repo {
    pub(super) fn serve(
        &mut self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        *self
            .requests
            .entry((method.to_string(), path.to_string()))
            .or_default() += 1;
        if method != Method::GET && method != Method::HEAD {
            self.write_requests += 1;
        }
        if method == Method::PUT && path.ends_with("/merge") {
            self.merge_requests += 1;
        }
        if let Some(status) = self.take_fault(method.as_str(), path) {
            return fault(status);
        }
        self.catch_up();
        if let Some(answer) = self.serve_app(method, path, headers) {
            return answer;
        }
        match self.authorize(headers) {
            Some(caller) => self.caller = caller,
            None => return error(401, "Bad credentials"),
        }

        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let [first, owner, name, rest @ ..] = segments.as_slice() else {
            return not_found();
        };
        if first != "repos"
            || !owner.eq_ignore_ascii_case(&self.owner)
            || !name.eq_ignore_ascii_case(&self.name)
        {
            return not_found();
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(_) => return error(400, "Problems parsing JSON"),
            }
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let number = |n: &str| n.parse::<u64>().ok();
        match (method.as_str(), rest.as_slice()) {
            ("GET", []) => reply(200, &self.repo_json()),
            ("GET", ["git", "ref" | "refs", "heads", branch @ ..]) => {
                self.get_ref(&branch.join("/"))
            }
            ("POST", ["git", "refs"]) => self.create_ref(&body),
            ("PATCH", ["git", "refs", "heads", branch @ ..]) => {
                self.update_ref(&branch.join("/"), &body)
            }
            ("DELETE", ["git", "refs", "heads", branch @ ..]) => {
                if self.delete_branch(&branch.join("/")) {
                    no_content()
                } else {
                    unprocessable("Reference does not exist")
                }
            }
            ("POST", ["git", "blobs"]) => self.create_blob(&body),
            ("GET", ["git", "blobs", sha]) => self.get_blob(sha),
            ("POST", ["git", "trees"]) => self.create_tree(&body),
            ("GET", ["git", "trees", tree_ish @ ..]) => {
                match self.resolve_tree(&tree_ish.join("/")) {
                    Some(sha) if query.contains_key("recursive") => {
                        reply(200, &self.recursive_tree_json(&sha))
                    }
                    Some(sha) => reply(200, &self.tree_json(&sha)),
                    None => not_found(),
                }
            }
            ("POST", ["git", "commits"]) => self.create_commit(&body),
            ("GET", ["git", "commits", sha]) => match self.commits.contains_key(*sha) {
                true => reply(200, &self.commit_json(sha)),
                false => not_found(),
            },
            // GitHub has no Checks permission for fine-grained tokens.
            ("GET", ["commits", _, "check-runs"])
                if matches!(self.caller, Caller::Token)
                    && self.token.starts_with(FINE_GRAINED_PREFIX) =>
            {
                error(403, "Resource not accessible by personal access token")
            }
            ("GET", ["commits", sha, "check-runs"]) => self.check_runs_json(sha),
            ("GET", ["commits", sha, "status"]) => self.combined_status_json(sha),
            ("GET", ["deployments"]) => self.deployments_json(query),
            ("GET", ["deployments", id, "statuses"]) => match number(id) {
                Some(id) => self.deployment_statuses_json(id, query),
                None => not_found(),
            },
            ("GET", ["contents", path @ ..]) => self.get_contents(&path.join("/"), query),
            ("GET", ["pulls"]) => self.list_pulls(query),
            ("POST", ["pulls"]) => self.create_pull(&body),
            ("GET", ["pulls", n]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => reply(200, &self.pull_json(pull, true)),
                None => not_found(),
            },
            ("PATCH", ["pulls", n]) => match number(n) {
                Some(n) => self.update_pull(n, &body),
                None => not_found(),
            },
            ("PUT", ["pulls", n, "merge"]) => match number(n) {
                Some(n) => self.merge_request(n, &body),
                None => not_found(),
            },
            ("GET", ["pulls", n, "merge"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) if pull.public.state == PullState::Merged => no_content(),
                _ => not_found(),
            },
            ("GET", ["issues", n, "labels"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => reply(200, &self.labels_json(pull)),
                None => not_found(),
            },
            ("POST", ["issues", n, "labels"]) => match number(n) {
                Some(n) => self.add_labels(n, &body),
                None => not_found(),
            },
            ("GET", ["issues", n, "comments"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => {
                    let comments = (0..pull.public.comments.len())
                        .map(|i| self.comment_json(pull, i))
                        .collect();
                    reply(200, &Value::Array(comments))
                }
                None => not_found(),
            },
            ("POST", ["issues", n, "comments"]) => match number(n) {
                Some(n) => self.add_comment(n, &body),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    /// `GET /deployments?sha=`: newest first, like GitHub.
    pub(super) fn deployments_json(&self, query: &HashMap<String, String>) -> Response {
        let list: Vec<Value> = self
            .deployments
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, d)| query.get("sha").is_none_or(|sha| *sha == d.sha))
            .take(per_page(query))
            .map(|(i, d)| {
                json!({
                    "id": i + 1, "sha": d.sha, "ref": d.sha, "task": "deploy",
                    "environment": d.environment,
                    "production_environment": d.production_environment,
                    "transient_environment": !d.production_environment,
                    "creator": self.user_json("deployer[bot]"),
                })
            })
            .collect();
        reply(200, &Value::Array(list))
    }

    /// `GET /deployments/{id}/statuses`: newest first.
    pub(super) fn deployment_statuses_json(
        &self,
        id: u64,
        query: &HashMap<String, String>,
    ) -> Response {
        let Some(d) = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.deployments.get(i))
        else {
            return not_found();
        };
        let list: Vec<Value> = d
            .statuses
            .iter()
            .enumerate()
            .rev()
            .take(per_page(query))
            .map(|(i, s)| {
                json!({
                    "id": i + 1, "state": s.state, "environment": d.environment,
                    "environment_url": s.environment_url.clone().unwrap_or_default(),
                    "target_url": "", "log_url": "", "description": "",
                })
            })
            .collect();
        reply(200, &Value::Array(list))
    }

    /// `GET /commits/{sha}/check-runs`.
    pub(super) fn check_runs_json(&self, sha: &str) -> Response {
        let runs = self.check_runs.get(sha).cloned().unwrap_or_default();
        let list: Vec<Value> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "id": i + 1, "head_sha": sha, "name": r.name, "status": r.status,
                    "conclusion": r.conclusion, "html_url": r.html_url,
                    "output": {
                        "title": r.summary.as_ref().map(|s| s.lines().next().unwrap_or_default()),
                        "summary": r.summary, "text": null,
                        "annotations_count": 0,
                    },
                })
            })
            .collect();
        reply(200, &json!({"total_count": list.len(), "check_runs": list}))
    }

    /// `GET /commits/{sha}/status`: with no statuses GitHub says "pending"
    /// with total_count 0, which means "no CI here", not "wait".
    pub(super) fn combined_status_json(&self, sha: &str) -> Response {
        let list = self.statuses.get(sha).cloned().unwrap_or_default();
        let state = if list
            .iter()
            .any(|s| s.state == "failure" || s.state == "error")
        {
            "failure"
        } else if list.is_empty() || list.iter().any(|s| s.state == "pending") {
            "pending"
        } else {
            "success"
        };
        let statuses: Vec<Value> = list
            .iter()
            .map(|s| json!({"context": s.context, "state": s.state, "target_url": s.target_url, "description": null}))
            .collect();
        reply(
            200,
            &json!({"state": state, "sha": sha, "total_count": statuses.len(), "statuses": statuses}),
        )
    }

    pub(super) fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let i = self.faults.iter().position(|f| {
            f.remaining > 0
                && path.contains(&f.path_contains)
                && f.method.as_deref().is_none_or(|m| m == method)
        })?;
        let fault = &mut self.faults[i];
        fault.remaining -= 1;
        let status = fault.status;
        if fault.remaining == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }

    /// The person's token, or a live installation token; `None` earns GitHub's 401.
    pub(super) fn authorize(&mut self, headers: &HeaderMap) -> Option<Caller> {
        let token = bearer(headers)?;
        if token == self.token {
            return Some(Caller::Token);
        }
        let now = self.time();
        let issued = self.tokens.iter().find(|t| t.token == token)?;
        if issued.expires_at > now {
            Some(Caller::Installation)
        } else {
            self.expired_token_refusals += 1;
            None
        }
    }

    /// The two endpoints an App calls with its JWT: its installation on the
    /// repository, and a token for that installation. `None` for any other path.
    pub(super) fn serve_app(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // The installation asked for: this repository's, or one by id.
        let wanted = match (method.as_str(), segments.as_slice()) {
            ("GET", ["repos", owner, name, "installation"]) => {
                let here = owner.eq_ignore_ascii_case(&self.owner)
                    && name.eq_ignore_ascii_case(&self.name);
                here.then_some(None)
            }
            ("POST", ["app", "installations", id, "access_tokens"]) => {
                id.parse::<u64>().ok().map(Some)
            }
            _ => return None,
        };
        let Some(app) = self.app.clone() else {
            return Some(error(401, github_app::UNDECODABLE));
        };
        let jwt = bearer(headers).unwrap_or_default();
        if let Err(message) = github_app::verify_jwt(&jwt, &app, self.time()) {
            return Some(error(401, message));
        }
        Some(match (wanted, app.installation_id) {
            (Some(None), Some(id)) => reply(200, &self.installation_json(&app, id)),
            (Some(Some(wanted)), Some(id)) if wanted == id => {
                let issued = github_app::new_token(&app, self.tokens.len() as u64, self.time());
                let body = json!({
                    "token": issued.token,
                    "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "permissions": github_app::permissions(),
                    "repository_selection": "selected",
                });
                self.tokens.push(issued);
                reply(201, &body)
            }
            _ => not_found(),
        })
    }

    // -- git refs --

    pub(super) fn get_ref(&self, branch: &str) -> Response {
        match self.refs.get(branch) {
            Some(sha) => reply(200, &self.ref_json(branch, sha)),
            None => not_found(),
        }
    }

    pub(super) fn create_ref(&mut self, body: &Value) -> Response {
        let (Some(full), Some(sha)) = (body["ref"].as_str(), body["sha"].as_str()) else {
            return invalid(json!([{"resource": "Reference", "code": "missing_field"}]));
        };
        let Some(branch) = full.strip_prefix("refs/heads/").filter(|b| !b.is_empty()) else {
            return unprocessable(&format!("{full} is not a valid ref name."));
        };
        if !self.commits.contains_key(sha) {
            return unprocessable("Object does not exist");
        }
        if self.refs.contains_key(branch) {
            return unprocessable("Reference already exists");
        }
        self.move_branch(branch, sha);
        reply(201, &self.ref_json(branch, sha))
    }

    pub(super) fn update_ref(&mut self, branch: &str, body: &Value) -> Response {
        let Some(sha) = body["sha"].as_str() else {
            return invalid(
                json!([{"resource": "Reference", "field": "sha", "code": "missing_field"}]),
            );
        };
        let Some(current) = self.refs.get(branch).cloned() else {
            return unprocessable("Reference does not exist");
        };
        if !self.commits.contains_key(sha) {
            return unprocessable("Object does not exist");
        }
        let force = body["force"].as_bool().unwrap_or(false);
        if !force && !self.is_ancestor(&current, sha) {
            return unprocessable("Update is not a fast forward");
        }
        self.move_branch(branch, sha);
        reply(200, &self.ref_json(branch, sha))
    }

    // -- git objects --

    pub(super) fn create_blob(&mut self, body: &Value) -> Response {
        let Some(content) = body["content"].as_str() else {
            return invalid(
                json!([{"resource": "Blob", "field": "content", "code": "missing_field"}]),
            );
        };
        let bytes = match body["encoding"].as_str().unwrap_or("utf-8") {
            "utf-8" => content.as_bytes().to_vec(),
            "base64" => match decode_base64(content) {
                Some(bytes) => bytes,
                None => return unprocessable("Invalid Base64 content"),
            },
            other => return unprocessable(&format!("encoding {other} is not supported")),
        };
        let sha = self.put_blob(&bytes);
        let url = self.api(&format!("git/blobs/{sha}"));
        reply(201, &json!({"sha": sha, "url": url}))
    }

    pub(super) fn get_blob(&self, sha: &str) -> Response {
        let Some(content) = self.blobs.get(sha) else {
            return not_found();
        };
        reply(
            200,
            &json!({
                "sha": sha,
                "node_id": format!("B_{sha}"),
                "size": content.len(),
                "url": self.api(&format!("git/blobs/{sha}")),
                "content": encode_base64_wrapped(content),
                "encoding": "base64",
            }),
        )
    }

    pub(super) fn create_tree(&mut self, body: &Value) -> Response {
        let mut tree = match body["base_tree"].as_str() {
            Some(base) => match self.trees.get(base) {
                Some(tree) => tree.clone(),
                None => return unprocessable("base_tree is not a valid tree oid"),
            },
            None => Tree::new(),
        };
        let Some(entries) = body["tree"].as_array() else {
            return invalid(
                json!([{"resource": "Tree", "field": "tree", "code": "missing_field"}]),
            );
        };
        for entry in entries {
            let Some(path) = entry["path"].as_str().filter(|p| !p.is_empty()) else {
                return unprocessable("tree.path is missing");
            };
            if entry["type"].as_str().unwrap_or("blob") != "blob" {
                return unprocessable("the twin only stores blobs in trees");
            }
            match (entry.get("content"), entry.get("sha")) {
                (Some(Value::String(_)), Some(Value::String(_))) => {
                    return unprocessable(BOTH_OR_NEITHER);
                }
                (Some(Value::String(content)), _) => {
                    let blob = self.put_blob(content.as_bytes());
                    tree.insert(path.to_string(), blob);
                }
                (_, Some(Value::String(sha))) => {
                    if !self.blobs.contains_key(sha) {
                        return unprocessable(&format!("tree.sha {sha} is not a valid blob"));
                    }
                    tree.insert(path.to_string(), sha.clone());
                }
                (_, Some(Value::Null)) => {
                    if tree.remove(path).is_none() {
                        return unprocessable("GitRPC::BadObjectState");
                    }
                }
                _ => return unprocessable(BOTH_OR_NEITHER),
            }
        }
        let sha = self.put_tree(tree);
        reply(201, &self.tree_json(&sha))
    }

    pub(super) fn create_commit(&mut self, body: &Value) -> Response {
        let (Some(message), Some(tree)) = (body["message"].as_str(), body["tree"].as_str()) else {
            return invalid(json!([{"resource": "Commit", "code": "missing_field"}]));
        };
        if !self.trees.contains_key(tree) {
            return unprocessable("Tree SHA does not exist");
        }
        let mut parents = Vec::new();
        for parent in body["parents"].as_array().into_iter().flatten() {
            match parent.as_str() {
                Some(sha) if self.commits.contains_key(sha) => parents.push(sha.to_string()),
                _ => return unprocessable("Parent SHA does not exist or is not a commit object"),
            }
        }
        let sha = self.put_commit(message, tree, parents);
        reply(201, &self.commit_json(&sha))
    }

    // -- contents --

    pub(super) fn get_contents(&self, path: &str, query: &HashMap<String, String>) -> Response {
        let wanted = query
            .get("ref")
            .cloned()
            .unwrap_or_else(|| self.base_branch.clone());
        let name = wanted.strip_prefix("refs/heads/").unwrap_or(&wanted);
        let commit = match self.refs.get(name) {
            Some(sha) => sha.clone(),
            None if self.commits.contains_key(&wanted) => wanted.clone(),
            None => return error(404, &format!("No commit found for the ref {wanted}")),
        };
        let tree = &self.trees[&self.commits[&commit].tree];
        let path = path.trim_matches('/');
        if let Some(blob) = tree.get(path) {
            return reply(200, &self.content_json(path, blob, &wanted, true));
        }
        // A directory: list what is directly inside it.
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut listing = BTreeMap::new();
        for (file, blob) in tree {
            if let Some(inside) = file.strip_prefix(&prefix) {
                let entry = match inside.split_once('/') {
                    None => self.content_json(file, blob, &wanted, false),
                    Some((dir, _)) => self.dir_json(&format!("{prefix}{dir}"), &wanted),
                };
                listing
                    .entry(entry["path"].as_str().unwrap_or_default().to_string())
                    .or_insert(entry);
            }
        }
        if listing.is_empty() {
            return not_found();
        }
        reply(200, &Value::Array(listing.into_values().collect()))
    }

    // -- pull requests --

    pub(super) fn list_pulls(&self, query: &HashMap<String, String>) -> Response {
        let state = query.get("state").map_or("open", String::as_str);
        // Like GitHub, a head without "owner:" is ignored rather than matched.
        let head = query.get("head").and_then(|h| h.split_once(':'));
        let base = query.get("base");
        let per_page = per_page(query);
        let page = query
            .get("page")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let mut matching: Vec<&Pull> = self
            .pulls
            .iter()
            .filter(|p| match state {
                "all" => true,
                "closed" => p.public.state != PullState::Open,
                _ => p.public.state == PullState::Open,
            })
            .filter(|p| match head {
                Some((owner, branch)) => {
                    owner.eq_ignore_ascii_case(&self.owner) && p.public.head == branch
                }
                None => true,
            })
            .filter(|p| base.is_none_or(|b| &p.public.base == b))
            .collect();
        if query.get("direction").map(String::as_str) != Some("asc") {
            matching.reverse();
        }
        let pulls = matching
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|p| self.pull_json(p, false))
            .collect();
        reply(200, &Value::Array(pulls))
    }

    pub(super) fn create_pull(&mut self, body: &Value) -> Response {
        let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
            return invalid(
                json!([{"resource": "PullRequest", "code": "missing_field", "field": "title"}]),
            );
        };
        let head = body["head"].as_str().unwrap_or_default();
        let branch = match head.split_once(':') {
            Some((owner, branch)) if owner.eq_ignore_ascii_case(&self.owner) => branch,
            Some(_) => head,
            None => head,
        };
        let base = body["base"].as_str().unwrap_or_default();
        if !self.refs.contains_key(base) {
            return invalid(
                json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
            );
        }
        let Some(head_sha) = self.refs.get(branch).cloned() else {
            return invalid(
                json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
            );
        };
        let label = format!("{}:{branch}", self.owner);
        if self.pulls.iter().any(|p| {
            p.public.head == branch && p.public.base == base && p.public.state == PullState::Open
        }) {
            let message = format!("A pull request already exists for {label}.");
            return invalid(
                json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            );
        }
        if self.is_ancestor(&head_sha, &self.refs[base]) {
            let message = format!("No commits between {base} and {branch}");
            return invalid(
                json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            );
        }
        let number = self
            .pulls
            .iter()
            .map(|p| p.public.number)
            .max()
            .unwrap_or(0)
            + 1;
        let now = self.now();
        self.pulls.push(Pull {
            public: TwinPull {
                number,
                title: title.to_string(),
                body: body["body"].as_str().unwrap_or_default().to_string(),
                head: branch.to_string(),
                head_sha,
                base: base.to_string(),
                state: PullState::Open,
                labels: Vec::new(),
                comments: Vec::new(),
                merge_commit_sha: None,
                author: self.caller_login(),
            },
            mergeable: true,
            merged_head: None,
            created_at: now.clone(),
            updated_at: now,
            closed_at: None,
            merged_at: None,
        });
        let pull = &self.pulls[self.pulls.len() - 1];
        reply(201, &self.pull_json(pull, true))
    }

    pub(super) fn update_pull(&mut self, number: u64, body: &Value) -> Response {
        let Some(pull) = self.pull(number) else {
            return not_found();
        };
        let reopen_possible = self.refs.contains_key(&pull.public.head);
        let now = self.now();
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        if let Some(title) = body["title"].as_str() {
            pull.public.title = title.to_string();
        }
        if let Some(text) = body["body"].as_str() {
            pull.public.body = text.to_string();
        }
        match (body["state"].as_str(), pull.public.state) {
            (Some("closed"), PullState::Open) => {
                pull.public.state = PullState::Closed;
                pull.closed_at = Some(now.clone());
            }
            (Some("open"), PullState::Closed) if reopen_possible => {
                pull.public.state = PullState::Open;
                pull.closed_at = None;
            }
            (Some("open"), PullState::Closed | PullState::Merged) => {
                return invalid(
                    json!([{"resource": "PullRequest", "code": "custom", "field": "state", "message": "state cannot be changed. The pull request cannot be reopened."}]),
                );
            }
            _ => {}
        }
        pull.updated_at = now;
        let pull = self.pull(number).map(|p| self.pull_json(p, true));
        reply(200, &pull.unwrap_or(Value::Null))
    }

    pub(super) fn merge_request(&mut self, number: u64, body: &Value) -> Response {
        let Some(pull) = self.pull(number) else {
            return not_found();
        };
        let method = body["merge_method"].as_str().unwrap_or("merge");
        if !["merge", "squash", "rebase"].contains(&method) {
            return invalid(
                json!([{"resource": "PullRequest", "field": "merge_method", "code": "invalid"}]),
            );
        }
        if pull.public.state != PullState::Open {
            return error(405, "Pull Request is not mergeable");
        }
        if body["sha"]
            .as_str()
            .is_some_and(|sha| sha != pull.public.head_sha)
        {
            return error(
                409,
                "Head branch was modified. Review and try the merge again.",
            );
        }
        if !self.can_merge(pull) {
            return error(405, "Pull Request is not mergeable");
        }
        let title = match body["commit_title"].as_str() {
            Some(title) => title.to_string(),
            None if method == "merge" => {
                format!(
                    "Merge pull request #{number} from {}/{}",
                    self.owner, pull.public.head
                )
            }
            None => format!("{} (#{number})", pull.public.title),
        };
        let sha = self.merge_pull(number, method, &title, false);
        reply(
            200,
            &json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
        )
    }

    pub(super) fn add_labels(&mut self, number: u64, body: &Value) -> Response {
        // GitHub takes {"labels": [..]} or a bare array.
        let names: Vec<String> = body
            .get("labels")
            .unwrap_or(body)
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        for name in names {
            if !pull.public.labels.contains(&name) {
                pull.public.labels.push(name);
            }
        }
        let pull = &self.pulls[self
            .pulls
            .iter()
            .position(|p| p.public.number == number)
            .unwrap_or(0)];
        reply(200, &self.labels_json(pull))
    }

    pub(super) fn add_comment(&mut self, number: u64, body: &Value) -> Response {
        let Some(text) = body["body"].as_str() else {
            return invalid(
                json!([{"resource": "IssueComment", "field": "body", "code": "missing_field"}]),
            );
        };
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        pull.public.comments.push(text.to_string());
        let index = pull.public.comments.len() - 1;
        let pull = &self.pulls[self
            .pulls
            .iter()
            .position(|p| p.public.number == number)
            .unwrap_or(0)];
        reply(201, &self.comment_json(pull, index))
    }
}
