//! The dashboard's HTML, rendered on the server with maud: every page is complete without
//! JavaScript (the live queue view's refresh is the one script), usable at phone width, and
//! links only its own stylesheet and script. maud escapes every value it interpolates.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::highlight::highlight_metta;
use crate::recent_activity::ActivityBucket;
use crate::store::{CellRecord, JobRecord, SessionView};

/// Where the dashboard's pages live.
pub const BASE: &str = "/instructor";

/// A whole page: head, the top bar (with navigation when signed in), `body`.
pub fn layout(title: &str, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · MeTTa Learner instructors" }
                link rel="stylesheet" href={ (BASE) "/assets/dashboard.css" };
                script src={ (BASE) "/assets/dashboard.js" } defer {}
            }
            body {
                header.top {
                    span.brand { "MeTTa Learner · instructors" }
                    @if signed_in {
                        nav {
                            a href={ (BASE) "/sessions" } { "Sessions" }
                            a href={ (BASE) "/queue" } { "Queue (live)" }
                            form method="post" action={ (BASE) "/sign-out" } {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form, with an optional message (a wrong token, a missing session).
pub fn sign_in(message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        false,
        html! {
            h1 { "Sign in" }
            @if let Some(message) = message {
                p.notice role="alert" { (message) }
            }
            form.sign-in method="post" action={ (BASE) "/sign-in" } {
                label for="token" { "Instructor token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button.primary type="submit" { "Sign in" }
            }
            p.muted { "The token is the server's INSTRUCTOR_TOKEN. Signing in keeps you signed in on this browser for a few hours." }
        },
    )
}

/// A page saying something is not there (or the dashboard is off).
pub fn not_found(signed_in: bool, message: &str) -> Markup {
    layout(
        "Not found",
        signed_in,
        html! {
            h1 { "Not found" }
            p.notice role="alert" { (message) }
            @if signed_in { p { a href={ (BASE) "/sessions" } { "All sessions" } } }
        },
    )
}

/// One row of the sessions list.
pub struct SessionRow {
    pub id: String,
    pub cells: i64,
    pub jobs: i64,
    /// Failed and timed-out jobs, and whether the count is a lower bound (not every job read).
    pub failed: u64,
    pub timed_out: u64,
    pub counts_partial: bool,
    pub first_activity: Option<String>,
    pub last_activity: Option<String>,
}

/// The sessions list: search, a page of rows, paging.
pub fn sessions(
    rows: &[SessionRow],
    query: Option<&str>,
    search_message: Option<&str>,
    page: i64,
    pages: i64,
    total: i64,
) -> Markup {
    layout(
        "Sessions",
        true,
        html! {
            h1 { "Sessions" }
            form.search method="get" action={ (BASE) "/sessions" } role="search" {
                input type="search" name="q" value=[query] placeholder="Session id" aria-label="Session id";
                button.primary type="submit" { "Find" }
                @if query.is_some() { a href={ (BASE) "/sessions" } { "Show all" } }
            }
            @if let Some(message) = search_message { p.info { (message) } }
            @if rows.is_empty() {
                p.muted { "No sessions yet." }
            } @else {
                table.responsive {
                    thead { tr {
                        th { "Session" } th.num { "Cells" } th.num { "Jobs" } th.num { "Failed" }
                        th.num { "Timed out" } th { "First activity" } th { "Last activity" }
                    } }
                    tbody {
                        @for row in rows {
                            @let plus = if row.counts_partial { "+" } else { "" };
                            tr data-session=(row.id) {
                                td data-label="Session" { a href=(session_link(&row.id)) { (row.id) } }
                                td.num data-label="Cells" { (row.cells) }
                                td.num data-label="Jobs" { (row.jobs) }
                                td.num.bad[row.failed > 0] data-label="Failed" { (row.failed) (plus) }
                                td.num.slow[row.timed_out > 0] data-label="Timed out" { (row.timed_out) (plus) }
                                td data-label="First activity" { (when(row.first_activity.as_deref())) }
                                td data-label="Last activity" { (when(row.last_activity.as_deref())) }
                            }
                        }
                    }
                }
            }
            @if query.is_none() && pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 1 { a href={ (BASE) "/sessions?page=" (page - 1) } { "← Newer" } }
                    span.muted { "Page " (page) " of " (pages) " · " (total) " sessions" }
                    @if page < pages { a href={ (BASE) "/sessions?page=" (page + 1) } { "Older →" } }
                }
            } @else if query.is_none() {
                p.muted { (total) " sessions, newest activity first." }
            }
        },
    )
}

/// Which jobs the session page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFilter {
    All,
    /// Failed and timed-out jobs only.
    Problems,
}

/// One session: its history (highlighted) and its job log.
pub struct SessionPage<'a> {
    pub session: &'a SessionView,
    /// The page of jobs to show (already filtered), newest first.
    pub jobs: &'a [JobRecord],
    pub all_jobs: usize,
    pub problem_jobs: usize,
    pub jobs_partial: bool,
    pub filter: JobFilter,
    pub page: usize,
    pub pages: usize,
}

pub fn session(view: &SessionPage<'_>) -> Markup {
    let session = view.session;
    let id = session.id.as_str();
    let filter_link = |filter: JobFilter| match filter {
        JobFilter::All => format!("{}#jobs", session_link(id)),
        JobFilter::Problems => format!("{}?show=problems#jobs", session_link(id)),
    };
    let page_link = |page: usize| {
        let show = if view.filter == JobFilter::Problems {
            "show=problems&"
        } else {
            ""
        };
        format!("{}?{show}page={page}#jobs", session_link(id))
    };
    layout(
        &format!("Session {id}"),
        true,
        html! {
            h1 { "Session " (id) }
            p {
                a.button download href={ (session_link(id)) "/export" } { "Download .metta" }
            }
            div.stats {
                div.stat { b { (session.cells.len()) } span { "cells" } }
                div.stat { b { (view.all_jobs) } span { "jobs" } }
                div.stat { b { (view.problem_jobs) } span { "failed or timed out" } }
                div.stat { b { (when(Some(&session.created_at))) } span { "first activity" } }
                div.stat { b { (when(Some(&session.updated_at))) } span { "last activity" } }
            }
            h2 #history { "History (" (session.cells.len()) " cells)" }
            @if session.cells.is_empty() { p.muted { "The history is empty." } }
            @for cell in &session.cells { (history_cell(cell)) }
            h2 #jobs { "Job log" }
            nav.filters aria-label="Filter jobs" {
                a.current[view.filter == JobFilter::All] href=(filter_link(JobFilter::All)) { "All (" (view.all_jobs) ")" }
                a.current[view.filter == JobFilter::Problems] href=(filter_link(JobFilter::Problems)) { "Failures and time-outs (" (view.problem_jobs) ")" }
            }
            @if view.jobs_partial { p.muted { "Only the first jobs of this session are counted and listed here." } }
            @if view.jobs.is_empty() { p.muted { "No jobs to show." } }
            @for job in view.jobs { (job_entry(job)) }
            @if view.pages > 1 {
                nav.pager aria-label="Job pages" {
                    @if view.page > 1 { a href=(page_link(view.page - 1)) { "← Newer jobs" } }
                    span.muted { "Page " (view.page) " of " (view.pages) }
                    @if view.page < view.pages { a href=(page_link(view.page + 1)) { "Older jobs →" } }
                }
            }
        },
    )
}

fn history_cell(cell: &CellRecord) -> Markup {
    html! {
        article.cell data-code-id=(cell.code_id.as_str()) {
            header {
                b { "#" (cell.position) }
                code { (cell.code_id.as_str()) }
                span.muted { "ran " (when(Some(&cell.updated_at))) }
            }
            pre { code.metta { (highlight_metta(&cell.code)) } }
            div.label { "Last result" }
            @match cell.last_result.as_deref().filter(|text| !text.is_empty()) {
                Some(result) => pre.result { (result) },
                None => p.muted.result { "(no output)" },
            }
        }
    }
}

fn job_entry(job: &JobRecord) -> Markup {
    let status = job.status.as_str();
    let wait_ms = crate::service_metrics::queue_wait_seconds(job).map(|secs| secs * 1000.0);
    html! {
        article.job.(status) #{ "job-" (job.id) } data-job-id=(job.id.to_string()) data-status=(status) {
            header {
                span.badge.(status) { (status.replace('_', " ")) }
                b { (job.kind.as_str().replace('_', " ")) }
                @if let Some(language) = job.language { span { (language.as_str()) } }
                span.muted { "#" (job.seq) }
                @if let Some(code_id) = &job.code_id { code { (code_id.as_str()) } }
            }
            dl.timings {
                div { dt { "queued" } dd { (when(Some(&job.created_at))) } }
                div { dt { "started" } dd { (when(job.started_at.as_deref())) } }
                div { dt { "finished" } dd { (when(job.finished_at.as_deref())) } }
                div { dt { "waited" } dd { (millis(wait_ms)) } }
                div { dt { "ran" } dd { (millis(job.duration_ms.map(|ms| ms as f64))) } }
                @if job.attempts > 1 { div { dt { "attempts" } dd { (job.attempts) } } }
            }
            @if let Some(error) = job.error.as_deref().filter(|text| !text.is_empty()) {
                div.label { "Error" }
                pre.error { (error) }
            }
            @if !job.code.is_empty() {
                div.label { "Code" }
                @if job.language == Some(crate::domain::Language::Metta) {
                    pre { code.metta { (highlight_metta(&job.code)) } }
                } @else {
                    pre { code { (job.code) } }
                }
            }
            @if let Some(result) = job.result.as_deref().filter(|text| !text.is_empty()) {
                div.label { "Result" }
                pre.result { (result) }
            }
            @if let Some(output) = job.stdout.as_deref().filter(|text| !text.is_empty()) {
                @if job.result.as_deref() != Some(output) {
                    div.label { "Output" }
                    pre { (output) }
                }
            }
            @if let Some(stderr) = job.stderr.as_deref().filter(|text| !text.is_empty() && job.error.as_deref() != Some(*text)) {
                div.label { "Stderr" }
                pre { (stderr) }
            }
            @if job.output_truncated { p.muted { "Output was truncated at MAX_OUTPUT_BYTES." } }
        }
    }
}

/// What the live queue view shows (the page and its JSON refresh).
pub struct QueueSnapshot {
    pub queued: i64,
    pub running: i64,
    pub running_job: Option<JobRecord>,
    pub buckets: Vec<ActivityBucket>,
    pub bucket_secs: u64,
}

impl QueueSnapshot {
    pub fn finished_recently(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.finished).sum()
    }

    pub fn problems_recently(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.problems).sum()
    }

    /// Mean queue wait over the window, in milliseconds.
    pub fn mean_wait_ms(&self) -> Option<f64> {
        let (sum, count) =
            self.buckets
                .iter()
                .fold((0.0, 0u64), |(sum, count), bucket| {
                    match bucket.mean_wait_ms {
                        Some(mean) => {
                            (sum + mean * bucket.finished as f64, count + bucket.finished)
                        }
                        None => (sum, count),
                    }
                });
        (count > 0).then(|| sum / count as f64)
    }
}

pub fn queue(snapshot: &QueueSnapshot) -> Markup {
    layout(
        "Queue",
        true,
        html! {
            h1 { "Queue" }
            div #queue-live data-endpoint={ (BASE) "/queue/live" } {
                div.stats {
                    div.stat { b data-field="queued" { (snapshot.queued) } span { "queued" } }
                    div.stat { b data-field="running" { (snapshot.running) } span { "running" } }
                    div.stat { b data-field="finished" { (snapshot.finished_recently()) } span { "finished, last 5 min" } }
                    div.stat { b data-field="problems" { (snapshot.problems_recently()) } span { "failed or timed out" } }
                    div.stat { b data-field="mean-wait" { (millis(snapshot.mean_wait_ms())) } span { "mean queue wait" } }
                }
                h2 { "Running now" }
                div data-field="running-job" { (running_job(snapshot.running_job.as_ref())) }
                h2 { "Last 5 minutes" }
                div.chart data-field="chart" { (activity_chart(&snapshot.buckets, snapshot.bucket_secs)) }
                p.legend {
                    span { i.swatch-finished {} "jobs finished per " (snapshot.bucket_secs) " s" }
                    span { i.swatch-problems {} "of which failed or timed out" }
                    span { i.swatch-wait {} "mean queue wait (line)" }
                }
                p.muted { "Updated " span data-field="updated" { "when the page loaded" } "." }
                noscript { p.muted { "Live updates need JavaScript; reload the page to refresh." } }
            }
        },
    )
}

/// The running job, or a line saying none runs.
pub fn running_job(job: Option<&JobRecord>) -> Markup {
    html! {
        @match job {
            None => p.muted data-running-job="" { "No job is running." },
            Some(job) => p data-running-job=(job.id.to_string()) {
                span.badge.running { "running" } " "
                b { (job.kind.as_str().replace('_', " ")) } " "
                @if let Some(language) = job.language { (language.as_str()) " " }
                code { (job.id.to_string()) }
                @if let Some(session) = &job.session_id {
                    " in session " a href=(session_link(session.as_str())) { (session.as_str()) }
                }
                @if let Some(started) = job.started_at.as_deref() { span.muted { " since " (when(Some(started))) } }
            },
        }
    }
}

/// Bars of jobs finished per bucket (problems stacked in red) and a line of the mean wait.
pub fn activity_chart(buckets: &[ActivityBucket], bucket_secs: u64) -> Markup {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 160.0;
    const BOTTOM: f64 = 140.0;
    const TOP: f64 = 12.0;
    let count = buckets.len().max(1) as f64;
    let step = WIDTH / count;
    let most = buckets
        .iter()
        .map(|bucket| bucket.finished)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let longest_wait = buckets
        .iter()
        .filter_map(|bucket| bucket.mean_wait_ms)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let scale = |value: f64, max: f64| (BOTTOM - TOP) * value / max;
    let wait_points: Vec<String> = buckets
        .iter()
        .enumerate()
        .filter_map(|(index, bucket)| {
            let wait = bucket.mean_wait_ms?;
            let x = step * index as f64 + step / 2.0;
            Some(format!("{x:.1},{:.1}", BOTTOM - scale(wait, longest_wait)))
        })
        .collect();
    html! {
        svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label="Jobs finished and mean queue wait over the last five minutes" {
            @for (index, bucket) in buckets.iter().enumerate() {
                @let x = step * index as f64 + 1.0;
                @let all = scale(bucket.finished as f64, most);
                @let bad = scale(bucket.problems as f64, most);
                @if bucket.finished > 0 {
                    rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", BOTTOM - all)) width=(format!("{:.1}", step - 2.0)) height=(format!("{all:.1}")) {
                        title { (bucket.finished) " finished, " (bucket.seconds_ago) "–" (bucket.seconds_ago + bucket_secs) " s ago" }
                    }
                }
                @if bucket.problems > 0 {
                    rect.bar.problems x=(format!("{x:.1}")) y=(format!("{:.1}", BOTTOM - bad)) width=(format!("{:.1}", step - 2.0)) height=(format!("{bad:.1}")) {}
                }
            }
            @if wait_points.len() > 1 {
                polyline.wait points=(wait_points.join(" ")) {}
            }
            line x1="0" y1=(BOTTOM) x2=(WIDTH) y2=(BOTTOM) stroke="#d9dce3" {}
            text x="2" y=(HEIGHT - 4.0) { "5 min ago" }
            text x=(WIDTH - 2.0) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
            text x="2" y="10" { "max " (most as u64) " jobs · " (format!("{longest_wait:.0}")) " ms wait" }
        }
    }
}

pub fn session_link(id: &str) -> String {
    format!("{BASE}/sessions/{id}")
}

/// A stored timestamp (`2026-12-06T01:58:18.678Z`) as `2026-12-06 01:58:18`, or a dash.
fn when(timestamp: Option<&str>) -> Markup {
    match timestamp {
        None => html! { "–" },
        Some(text) => {
            let shown = text.replacen('T', " ", 1);
            let shown = shown
                .split('.')
                .next()
                .unwrap_or(&shown)
                .trim_end_matches('Z');
            html! { time datetime=(text) { (shown) } }
        }
    }
}

fn millis(value: Option<f64>) -> Markup {
    match value {
        None => html! { "–" },
        Some(ms) if ms < 10.0 => html! { (format!("{ms:.1}")) " ms" },
        Some(ms) => html! { (format!("{ms:.0}")) " ms" },
    }
}

/// Markup as a string, for the JSON refresh of the live view.
pub fn to_html(markup: Markup) -> String {
    let PreEscaped(text) = markup;
    text
}
