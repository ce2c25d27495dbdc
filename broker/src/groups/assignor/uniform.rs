//! The uniform assignor: balanced within one, sticky (members keep what balance allows), and
//! rack-aware (a max flow over racks places as many partitions on a same-rack member as the
//! quotas allow); the greedy rebalancing for members with different subscriptions.

use super::*;

pub(super) fn uniform(model: &Model<'_>) -> Vec<Option<usize>> {
    let active: Vec<usize> = (0..model.members.len())
        .filter(|&m| !model.subscribed[m].is_empty())
        .collect();
    if active.is_empty() {
        return vec![None; model.partitions()];
    }
    let homogeneous = active
        .windows(2)
        .all(|w| model.subscribed[w[0]] == model.subscribed[w[1]]);
    if homogeneous {
        uniform_homogeneous(model, &active)
    } else {
        uniform_heterogeneous(model)
    }
}

/// Placement state of the homogeneous case: every active member has quota `base`, plus one if
/// `has_extra`; `floating` larger quotas are not yet handed out.
#[derive(Debug)]
struct Quotas {
    owners: Vec<Option<usize>>,
    count: Vec<usize>,
    base: usize,
    has_extra: Vec<bool>,
    floating: usize,
}

impl Quotas {
    fn quota(&self, m: usize) -> usize {
        self.base + usize::from(self.has_extra[m])
    }

    /// Among `candidates`, the member with the fewest partitions (then the smallest id) that is
    /// below its quota, else one that can still take a larger quota.
    fn pick(&self, candidates: &[usize]) -> Option<usize> {
        let key = |m: &usize| (self.count[*m], *m);
        candidates
            .iter()
            .copied()
            .filter(|&m| self.count[m] < self.quota(m))
            .min_by_key(key)
            .or_else(|| {
                candidates
                    .iter()
                    .copied()
                    .filter(|&m| !self.has_extra[m] && self.floating > 0)
                    .min_by_key(key)
            })
    }

    fn give(&mut self, p: usize, m: usize) {
        if self.count[m] >= self.quota(m) && !self.has_extra[m] && self.floating > 0 {
            self.has_extra[m] = true;
            self.floating -= 1;
        }
        self.owners[p] = Some(m);
        self.count[m] += 1;
    }
}

fn uniform_homogeneous(model: &Model<'_>, active: &[usize]) -> Vec<Option<usize>> {
    let total = model.partitions();
    let n = active.len();
    let (base, extra) = (total / n, total % n);
    let claims = model.claims();
    let mut state = Quotas {
        owners: vec![None; total],
        count: vec![0; model.members.len()],
        base,
        has_extra: vec![false; model.members.len()],
        floating: extra,
    };
    // The larger quotas go to members that can fill them from their own partitions.
    let mut order = active.to_vec();
    order.sort_by_key(|&m| (Reverse(claims[m].len()), m));
    for &m in &order {
        if state.floating > 0 && claims[m].len() > base {
            state.has_extra[m] = true;
            state.floating -= 1;
        }
    }
    for &m in active {
        let mut mine = claims[m].clone();
        mine.sort_by_key(|&p| (!model.matches(m, p), p));
        mine.truncate(state.quota(m));
        for p in mine {
            state.give(p, m);
        }
    }
    let orphans: Vec<usize> = (0..total).filter(|&p| state.owners[p].is_none()).collect();
    for p in place_by_rack(model, active, &mut state, orphans) {
        let chosen = state
            .pick(active)
            .or_else(|| active.iter().copied().min_by_key(|&m| (state.count[m], m)));
        if let Some(m) = chosen {
            state.give(p, m);
        }
    }
    state.owners
}

/// Places as many of `orphans` as possible on same-rack members within their quotas (max flow:
/// source -> group of partitions with the same replica racks -> rack -> sink, where a rack's
/// members' remaining quotas go straight to the sink and their possible larger quotas go through
/// a pool node capped at the larger quotas left). Returns the partitions left to place.
fn place_by_rack(
    model: &Model<'_>,
    active: &[usize],
    state: &mut Quotas,
    orphans: Vec<usize>,
) -> Vec<usize> {
    let mut leftover = Vec::new();
    let mut groups: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    for p in orphans {
        match model.part_racks[p].as_slice() {
            [] => leftover.push(p),
            racks => groups.entry(racks).or_default().push(p),
        }
    }
    if groups.is_empty() {
        return leftover;
    }
    let racks = model.racks;
    let mut rack_members = vec![Vec::new(); racks];
    let mut room = vec![0; racks];
    let mut stretch = vec![0; racks];
    for &m in active {
        if let Some(r) = model.member_rack[m] {
            rack_members[r].push(m);
            room[r] += state.quota(m).saturating_sub(state.count[m]);
            stretch[r] += usize::from(!state.has_extra[m]);
        }
    }
    const SOURCE: usize = 0;
    const SINK: usize = 1;
    const POOL: usize = 2;
    let rack_node = |r: usize| 3 + r;
    let mut flow = Flow::new(3 + racks + groups.len());
    flow.edge(POOL, SINK, state.floating);
    for (r, (&room, &stretch)) in room.iter().zip(&stretch).enumerate() {
        flow.edge(rack_node(r), SINK, room);
        flow.edge(rack_node(r), POOL, stretch);
    }
    let mut group_edges = Vec::new();
    for (g, (rack_set, parts)) in groups.iter().enumerate() {
        let node = 3 + racks + g;
        flow.edge(SOURCE, node, parts.len());
        let edges: Vec<(usize, usize)> = rack_set
            .iter()
            .map(|&r| (r, flow.edge(node, rack_node(r), parts.len())))
            .collect();
        group_edges.push(edges);
    }
    flow.run(SOURCE, SINK);
    let mut buckets = vec![Vec::new(); racks];
    for (parts, edges) in groups.into_values().zip(group_edges) {
        let mut parts = parts.into_iter();
        for (r, edge) in edges {
            buckets[r].extend(parts.by_ref().take(flow.flow_on(edge)));
        }
        leftover.extend(parts);
    }
    for (bucket, members) in buckets.into_iter().zip(&rack_members) {
        for p in bucket {
            match state.pick(members) {
                Some(m) => state.give(p, m),
                None => leftover.push(p),
            }
        }
    }
    leftover.sort_unstable();
    leftover
}

/// A small max-flow network (Edmonds-Karp). Edge `e ^ 1` is edge `e`'s reverse.
#[derive(Debug)]
struct Flow {
    adjacency: Vec<Vec<usize>>,
    to: Vec<usize>,
    capacity: Vec<usize>,
}

impl Flow {
    fn new(nodes: usize) -> Self {
        Flow {
            adjacency: vec![Vec::new(); nodes],
            to: Vec::new(),
            capacity: Vec::new(),
        }
    }

    fn edge(&mut self, from: usize, to: usize, capacity: usize) -> usize {
        let e = self.to.len();
        self.to.extend([to, from]);
        self.capacity.extend([capacity, 0]);
        self.adjacency[from].push(e);
        self.adjacency[to].push(e + 1);
        e
    }

    fn flow_on(&self, edge: usize) -> usize {
        self.capacity[edge ^ 1]
    }

    fn run(&mut self, source: usize, sink: usize) {
        let nodes = self.adjacency.len();
        loop {
            let mut via: Vec<Option<usize>> = vec![None; nodes];
            let mut seen = vec![false; nodes];
            seen[source] = true;
            let mut queue = VecDeque::from([source]);
            while let Some(u) = queue.pop_front() {
                for &e in &self.adjacency[u] {
                    let v = self.to[e];
                    if self.capacity[e] > 0 && !seen[v] {
                        seen[v] = true;
                        via[v] = Some(e);
                        queue.push_back(v);
                    }
                }
            }
            if !seen[sink] || source == sink {
                return;
            }
            let mut push = usize::MAX;
            let mut v = sink;
            while let Some(e) = via[v] {
                push = push.min(self.capacity[e]);
                v = self.to[e ^ 1];
            }
            let mut v = sink;
            while let Some(e) = via[v] {
                self.capacity[e] -= push;
                self.capacity[e ^ 1] += push;
                v = self.to[e ^ 1];
            }
        }
    }
}

fn uniform_heterogeneous(model: &Model<'_>) -> Vec<Option<usize>> {
    let total = model.partitions();
    let mut owners = vec![None; total];
    let mut held = vec![BTreeSet::new(); model.members.len()];
    for (m, claims) in model.claims().into_iter().enumerate() {
        for p in claims {
            owners[p] = Some(m);
            held[m].insert(p);
        }
    }
    let mut orphans: Vec<usize> = (0..total).filter(|&p| owners[p].is_none()).collect();
    orphans.sort_by_key(|&p| (model.eligible[model.part_topic[p]].len(), p));
    for p in orphans {
        let best = model.eligible[model.part_topic[p]]
            .iter()
            .copied()
            .min_by_key(|&m| (held[m].len(), !model.matches(m, p), m));
        if let Some(m) = best {
            owners[p] = Some(m);
            held[m].insert(p);
        }
    }
    // Each move lowers the sum of squared counts, so this ends.
    while let Some((p, from, to)) = rebalancing_move(model, &held) {
        held[from].remove(&p);
        held[to].insert(p);
        owners[p] = Some(to);
    }
    owners
}

/// A move `(partition, from, to)` from a member with the most partitions to a subscribed member
/// with at least two fewer, if there is one.
fn rebalancing_move(model: &Model<'_>, held: &[BTreeSet<usize>]) -> Option<(usize, usize, usize)> {
    let mut order: Vec<usize> = (0..held.len()).filter(|&m| held[m].len() >= 2).collect();
    order.sort_by_key(|&m| (Reverse(held[m].len()), m));
    for a in order {
        let have = held[a].len();
        let mut topics: Vec<usize> = held[a].iter().map(|&p| model.part_topic[p]).collect();
        topics.dedup();
        for t in topics {
            let receivers: Vec<usize> = model.eligible[t]
                .iter()
                .copied()
                .filter(|&b| b != a && held[b].len() + 2 <= have)
                .collect();
            let Some(fewest) = receivers.iter().map(|&b| held[b].len()).min() else {
                continue;
            };
            let receivers: Vec<usize> = receivers
                .into_iter()
                .filter(|&b| held[b].len() == fewest)
                .collect();
            let best = held[a]
                .range(model.first[t]..model.first[t + 1])
                .flat_map(|&p| receivers.iter().map(move |&b| (p, b)))
                .min_by_key(|&(p, b)| (!model.matches(b, p), model.matches(a, p), p, b));
            if let Some((p, b)) = best {
                return Some((p, a, b));
            }
        }
    }
    None
}
