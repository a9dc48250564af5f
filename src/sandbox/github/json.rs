//! GitHub's JSON shapes of the twin's objects.

use super::*;

impl Repo {
    /// `{api}/repos/{owner}/{name}/{route}`.
    pub(super) fn api(&self, route: &str) -> String {
        format!(
            "{}/repos/{}/{}/{route}",
            self.api_url, self.owner, self.name
        )
    }

    /// The twin serves no HTML: pages point at its own host, GitHub-style.
    pub(super) fn html(&self, route: &str) -> String {
        format!("{}/{}/{}/{route}", self.api_url, self.owner, self.name)
    }

    /// `GET /repos/{owner}/{repo}/installation`: the App installed on the owner's account.
    pub(super) fn installation_json(&self, app: &TwinApp, id: u64) -> Value {
        let api = &self.api_url;
        json!({
            "id": id, "account": self.user_json(&self.owner),
            "access_tokens_url": format!("{api}/app/installations/{id}/access_tokens"),
            "repositories_url": format!("{api}/installation/repositories"),
            "html_url": format!("{api}/settings/installations/{id}"),
            "app_id": app.id, "app_slug": app.slug, "target_id": 1, "target_type": "Organization",
            "permissions": github_app::permissions(), "events": [],
            "created_at": self.now(), "updated_at": self.now(),
            "single_file_name": null, "repository_selection": "selected",
        })
    }

    pub(super) fn user_json(&self, login: &str) -> Value {
        let api = &self.api_url;
        let user = format!("{api}/users/{login}");
        json!({
            "login": login, "id": 1, "node_id": "MDQ6VXNlcjE=",
            "avatar_url": format!("{api}/avatars/{login}"), "gravatar_id": "",
            "url": user, "html_url": format!("{api}/{login}"),
            "followers_url": format!("{user}/followers"),
            "following_url": format!("{user}/following{{/other_user}}"),
            "gists_url": format!("{user}/gists{{/gist_id}}"),
            "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{user}/subscriptions"),
            "organizations_url": format!("{user}/orgs"),
            "repos_url": format!("{user}/repos"),
            "events_url": format!("{user}/events{{/privacy}}"),
            "received_events_url": format!("{user}/received_events"),
            "type": if login.ends_with("[bot]") { "Bot" } else { "User" }, "site_admin": false,
        })
    }

    pub(super) fn repo_json(&self) -> Value {
        json!({
            "id": 42, "node_id": "R_kgDOTwin", "name": self.name,
            "full_name": format!("{}/{}", self.owner, self.name),
            "private": true, "owner": self.user_json(&self.owner),
            "html_url": format!("{}/{}/{}", self.api_url, self.owner, self.name),
            "url": format!("{}/repos/{}/{}", self.api_url, self.owner, self.name),
            "default_branch": self.base_branch,
            "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        })
    }

    pub(super) fn ref_json(&self, branch: &str, sha: &str) -> Value {
        json!({
            "ref": format!("refs/heads/{branch}"),
            "node_id": format!("REF_{}", hash(&[branch.as_bytes()])),
            "url": self.api(&format!("git/refs/heads/{branch}")),
            "object": {"sha": sha, "type": "commit", "url": self.api(&format!("git/commits/{sha}"))},
        })
    }

    pub(super) fn tree_json(&self, sha: &str) -> Value {
        let entries: Vec<Value> = self.trees[sha]
            .iter()
            .map(|(path, blob)| {
                json!({
                    "path": path, "mode": "100644", "type": "blob", "sha": blob,
                    "size": self.blobs[blob].len(), "url": self.api(&format!("git/blobs/{blob}")),
                })
            })
            .collect();
        json!({"sha": sha, "url": self.api(&format!("git/trees/{sha}")), "tree": entries, "truncated": false})
    }

    /// A tree sha, or the tree of a commit sha or a branch name, as GitHub
    /// accepts any of them in `GET /git/trees/{tree_sha}`.
    pub(super) fn resolve_tree(&self, tree_ish: &str) -> Option<String> {
        if self.trees.contains_key(tree_ish) {
            return Some(tree_ish.to_string());
        }
        let commit = self.refs.get(tree_ish).map_or(tree_ish, String::as_str);
        self.commits.get(commit).map(|c| c.tree.clone())
    }

    /// `?recursive=1`: every blob and, as GitHub lists them, every directory
    /// as a `tree` entry (its sha stands for the flat tree's slice).
    pub(super) fn recursive_tree_json(&self, sha: &str) -> Value {
        let mut tree = self.tree_json(sha);
        let dirs: BTreeSet<&str> = self.trees[sha]
            .keys()
            .flat_map(|path| path.match_indices('/').map(|(i, _)| &path[..i]))
            .collect();
        if let Some(entries) = tree["tree"].as_array_mut() {
            for dir in dirs {
                let dir_sha = hash(&[b"subtree", sha.as_bytes(), dir.as_bytes()]);
                entries.push(json!({
                    "path": dir, "mode": "040000", "type": "tree", "sha": dir_sha,
                    "url": self.api(&format!("git/trees/{dir_sha}")),
                }));
            }
            entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        }
        tree
    }

    pub(super) fn commit_json(&self, sha: &str) -> Value {
        let commit = &self.commits[sha];
        let person =
            json!({"name": commit.author, "email": "twin@example.invalid", "date": commit.date});
        let parents: Vec<Value> = commit
            .parents
            .iter()
            .map(|p| {
                json!({"sha": p, "url": self.api(&format!("git/commits/{p}")), "html_url": self.html(&format!("commit/{p}"))})
            })
            .collect();
        json!({
            "sha": sha, "node_id": format!("C_{sha}"),
            "url": self.api(&format!("git/commits/{sha}")),
            "html_url": self.html(&format!("commit/{sha}")),
            "author": person, "committer": person, "message": commit.message,
            "tree": {"sha": commit.tree, "url": self.api(&format!("git/trees/{}", commit.tree))},
            "parents": parents,
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
        })
    }

    pub(super) fn content_json(
        &self,
        path: &str,
        blob: &str,
        at: &str,
        with_content: bool,
    ) -> Value {
        let bytes = &self.blobs[blob];
        let name = path.rsplit('/').next().unwrap_or(path);
        let url = format!("{}?ref={at}", self.api(&format!("contents/{path}")));
        let git = self.api(&format!("git/blobs/{blob}"));
        let html = self.html(&format!("blob/{at}/{path}"));
        let mut value = json!({
            "type": "file", "size": bytes.len(), "name": name, "path": path, "sha": blob,
            "url": url, "git_url": git, "html_url": html,
            "download_url": format!("{}/raw/{}/{}/{at}/{path}", self.api_url, self.owner, self.name),
            "_links": {"self": url, "git": git, "html": html},
        });
        if with_content {
            value["encoding"] = json!("base64");
            value["content"] = json!(encode_base64_wrapped(bytes));
        }
        value
    }

    /// A directory entry in a listing (flat trees keep no sha for it: one is made up).
    pub(super) fn dir_json(&self, path: &str, at: &str) -> Value {
        let sha = hash(&[b"dir", path.as_bytes()]);
        let url = format!("{}?ref={at}", self.api(&format!("contents/{path}")));
        let git = self.api(&format!("git/trees/{sha}"));
        let html = self.html(&format!("tree/{at}/{path}"));
        json!({
            "type": "dir", "size": 0, "name": path.rsplit('/').next().unwrap_or(path),
            "path": path, "sha": sha, "url": url, "git_url": git, "html_url": html,
            "download_url": null, "_links": {"self": url, "git": git, "html": html},
        })
    }

    pub(super) fn label_json(&self, name: &str) -> Value {
        json!({
            "id": u64::from_str_radix(&hash(&[name.as_bytes()])[..8], 16).unwrap_or(7000),
            "node_id": format!("LA_{}", hash(&[name.as_bytes()])),
            "url": format!("{}/repos/{}/{}/labels/{}", self.api_url, self.owner, self.name, name),
            "name": name, "color": "ededed", "default": false, "description": null,
        })
    }

    pub(super) fn labels_json(&self, pull: &Pull) -> Value {
        Value::Array(
            pull.public
                .labels
                .iter()
                .map(|l| self.label_json(l))
                .collect(),
        )
    }

    pub(super) fn comment_json(&self, pull: &Pull, index: usize) -> Value {
        let number = pull.public.number;
        let id = number * 1_000 + index as u64 + 1;
        json!({
            "id": id, "node_id": format!("IC_{id}"),
            "url": self.api(&format!("issues/comments/{id}")),
            "html_url": self.html(&format!("pull/{number}#issuecomment-{id}")),
            "issue_url": self.api(&format!("issues/{number}")),
            "body": pull.public.comments[index],
            "user": self.user_json(&pull.public.author),
            "created_at": pull.updated_at, "updated_at": pull.updated_at,
            "author_association": "CONTRIBUTOR",
        })
    }

    pub(super) fn branch_json(&self, branch: &str, sha: &str) -> Value {
        json!({
            "label": format!("{}:{branch}", self.owner), "ref": branch, "sha": sha,
            "user": self.user_json(&self.owner), "repo": self.repo_json(),
        })
    }

    /// A pull request as `GET pulls/{n}` shows it; `full: false` is the list
    /// endpoint's shorter form, without `merged` and `mergeable`.
    pub(super) fn pull_json(&self, pull: &Pull, full: bool) -> Value {
        let p = &pull.public;
        let n = p.number;
        let open = p.state == PullState::Open;
        let base_sha = self.refs.get(&p.base).cloned().unwrap_or_default();
        // While open, GitHub fills merge_commit_sha with a test merge.
        let merge_commit_sha = match &p.merge_commit_sha {
            Some(sha) => Some(sha.clone()),
            None if open => Some(hash(&[
                b"test-merge",
                p.head_sha.as_bytes(),
                base_sha.as_bytes(),
            ])),
            None => None,
        };
        let link = |href: String| json!({"href": href});
        let links = json!({
            "self": link(self.api(&format!("pulls/{n}"))),
            "html": link(self.html(&format!("pull/{n}"))),
            "issue": link(self.api(&format!("issues/{n}"))),
            "comments": link(self.api(&format!("issues/{n}/comments"))),
            "review_comments": link(self.api(&format!("pulls/{n}/comments"))),
            "review_comment": link(self.api("pulls/comments{/number}")),
            "commits": link(self.api(&format!("pulls/{n}/commits"))),
            "statuses": link(self.api(&format!("statuses/{}", p.head_sha))),
        });
        let mut value = json!({
            "url": self.api(&format!("pulls/{n}")), "id": 5000 + n,
            "node_id": format!("PR_{n}"), "html_url": self.html(&format!("pull/{n}")),
            "diff_url": self.html(&format!("pull/{n}.diff")),
            "patch_url": self.html(&format!("pull/{n}.patch")),
            "issue_url": self.api(&format!("issues/{n}")),
            "commits_url": self.api(&format!("pulls/{n}/commits")),
            "review_comments_url": self.api(&format!("pulls/{n}/comments")),
            "review_comment_url": self.api("pulls/comments{/number}"),
            "comments_url": self.api(&format!("issues/{n}/comments")),
            "statuses_url": self.api(&format!("statuses/{}", p.head_sha)),
            "number": n, "state": if open { "open" } else { "closed" }, "locked": false,
            "title": p.title, "user": self.user_json(&p.author), "body": p.body,
            "labels": self.labels_json(pull), "milestone": null, "active_lock_reason": null,
            "created_at": pull.created_at, "updated_at": pull.updated_at,
            "closed_at": pull.closed_at, "merged_at": pull.merged_at,
            "merge_commit_sha": merge_commit_sha,
        });
        let more = json!({
            "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [],
            "head": self.branch_json(&p.head, &p.head_sha),
            "base": self.branch_json(&p.base, &base_sha),
            "_links": links,
            "author_association": "CONTRIBUTOR", "auto_merge": null, "draft": false,
        });
        extend(&mut value, more);
        if full {
            let mergeable = open.then(|| self.can_merge(pull));
            let state = match mergeable {
                Some(true) => "clean",
                Some(false) => "dirty",
                None => "unknown",
            };
            let extra = json!({
                "merged": p.state == PullState::Merged, "mergeable": mergeable,
                "rebaseable": mergeable, "mergeable_state": state,
                "merged_by": (p.state == PullState::Merged).then(|| self.user_json(&self.owner)),
                "comments": p.comments.len(), "review_comments": 0,
                "maintainer_can_modify": false, "commits": 1,
                "additions": 1, "deletions": 1, "changed_files": 1,
            });
            extend(&mut value, extra);
        }
        value
    }
}

pub(super) fn extend(value: &mut Value, more: Value) {
    if let (Value::Object(value), Value::Object(more)) = (value, more) {
        value.extend(more);
    }
}
