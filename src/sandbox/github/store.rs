//! The twin's object store (blobs, trees, commits, refs) and the repository's rules.

use super::*;

impl Repo {
    pub(super) fn put_blob(&mut self, content: &[u8]) -> String {
        let sha = hash(&[b"blob", content]);
        self.blobs.insert(sha.clone(), content.to_vec());
        sha
    }

    pub(super) fn put_tree(&mut self, tree: Tree) -> String {
        let mut parts: Vec<&[u8]> = vec![b"tree"];
        for (path, blob) in &tree {
            parts.push(path.as_bytes());
            parts.push(blob.as_bytes());
        }
        let sha = hash(&parts);
        self.trees.insert(sha.clone(), tree);
        sha
    }

    pub(super) fn put_commit(&mut self, message: &str, tree: &str, parents: Vec<String>) -> String {
        self.commit_counter += 1;
        let counter = self.commit_counter.to_string();
        let mut parts: Vec<&[u8]> = vec![b"commit", counter.as_bytes(), message.as_bytes()];
        parts.push(tree.as_bytes());
        for parent in &parents {
            parts.push(parent.as_bytes());
        }
        let sha = hash(&parts);
        let author = match &self.caller {
            Caller::Installation => self.caller_login(),
            Caller::Token => TOKEN_COMMITTER.to_string(),
        };
        let commit = Commit {
            message: message.to_string(),
            tree: tree.to_string(),
            parents,
            date: self.now(),
            author,
        };
        self.commits.insert(sha.clone(), commit);
        sha
    }

    pub(super) fn tree_of(&self, commit: &str) -> Option<&Tree> {
        self.trees.get(&self.commits.get(commit)?.tree)
    }

    pub(super) fn pull(&self, number: u64) -> Option<&Pull> {
        self.pulls.iter().find(|p| p.public.number == number)
    }

    pub(super) fn pull_mut(&mut self, number: u64) -> Option<&mut Pull> {
        self.pulls.iter_mut().find(|p| p.public.number == number)
    }

    /// Points `branch` at `sha`; open pull requests from it follow.
    pub(super) fn move_branch(&mut self, branch: &str, sha: &str) {
        self.refs.insert(branch.to_string(), sha.to_string());
        if branch != self.base_branch {
            self.on_push(branch, sha);
        }
        let now = self.now();
        for pull in &mut self.pulls {
            if pull.public.head == branch && pull.public.state == PullState::Open {
                pull.public.head_sha = sha.to_string();
                pull.updated_at = now.clone();
            }
        }
    }

    /// Removes `branch`; like GitHub, open pull requests from it are closed.
    pub(super) fn delete_branch(&mut self, branch: &str) -> bool {
        if self.refs.remove(branch).is_none() {
            return false;
        }
        let now = self.now();
        for pull in &mut self.pulls {
            if pull.public.head == branch && pull.public.state == PullState::Open {
                pull.public.state = PullState::Closed;
                pull.closed_at = Some(now.clone());
                pull.updated_at = now.clone();
            }
        }
        true
    }

    pub(super) fn ancestors(&self, sha: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut queue = VecDeque::from([sha.to_string()]);
        while let Some(sha) = queue.pop_front() {
            if !seen.insert(sha.clone()) {
                continue;
            }
            if let Some(commit) = self.commits.get(&sha) {
                queue.extend(commit.parents.iter().cloned());
            }
            order.push(sha);
        }
        order
    }

    pub(super) fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        self.ancestors(of).iter().any(|sha| sha == ancestor)
    }

    /// The tree a merge of `head` into `base` would have, or `None` on a
    /// conflict (unless `prefer_head`, which resolves it for the head).
    pub(super) fn merged_tree(&self, base: &str, head: &str, prefer_head: bool) -> Option<Tree> {
        let head_ancestors: BTreeSet<String> = self.ancestors(head).into_iter().collect();
        let merge_base = self
            .ancestors(base)
            .into_iter()
            .find(|sha| head_ancestors.contains(sha));
        let empty = Tree::new();
        let ours = self.tree_of(base).unwrap_or(&empty);
        let theirs = self.tree_of(head).unwrap_or(&empty);
        let original = merge_base
            .and_then(|sha| self.tree_of(&sha))
            .unwrap_or(&empty);
        let paths: BTreeSet<&String> = ours
            .keys()
            .chain(theirs.keys())
            .chain(original.keys())
            .collect();
        let mut merged = Tree::new();
        for path in paths {
            let (o, b, h) = (original.get(path), ours.get(path), theirs.get(path));
            let pick = if h == o || b == h {
                b
            } else if b == o || prefer_head {
                h
            } else {
                return None;
            };
            if let Some(blob) = pick {
                merged.insert(path.clone(), blob.clone());
            }
        }
        Some(merged)
    }

    /// Whether pull request `number` could be merged now.
    pub(super) fn can_merge(&self, pull: &Pull) -> bool {
        let base = &self.refs[&pull.public.base];
        pull.mergeable
            && self
                .merged_tree(base, &pull.public.head_sha, false)
                .is_some()
    }

    /// Merges an open pull request; returns the merge commit's sha.
    pub(super) fn merge_pull(
        &mut self,
        number: u64,
        method: &str,
        title: &str,
        prefer_head: bool,
    ) -> String {
        let Some(pull) = self.pull(number) else {
            return String::new();
        };
        let head = pull.public.head_sha.clone();
        let base_branch = pull.public.base.clone();
        let base = self.refs[&base_branch].clone();
        let tree = self
            .merged_tree(&base, &head, prefer_head)
            .unwrap_or_default();
        let tree = self.put_tree(tree);
        let parents = match method {
            "merge" => vec![base, head.clone()],
            _ => vec![base],
        };
        let sha = self.put_commit(title, &tree, parents);
        self.move_branch(&base_branch, &sha);
        let now = self.now();
        if let Some(pull) = self.pull_mut(number) {
            pull.public.state = PullState::Merged;
            pull.public.merge_commit_sha = Some(sha.clone());
            pull.merged_head = Some(head);
            pull.merged_at = Some(now.clone());
            pull.closed_at = Some(now.clone());
            pull.updated_at = now;
        }
        sha
    }
}
