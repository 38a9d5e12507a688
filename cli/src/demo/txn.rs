//! The demo's transaction steps: a write conflict, a pessimistic lock wait, a deadlock, the
//! commit protocols, and (on the embedded mock) a GC round — each checked.

use std::time::{Duration, Instant};

use tikv_tokio::{Config, Error, LockOptions, LockWait, TransactionClient, TransactionOptions};

use super::{Demo, check};
use crate::error::{CliError, Context};
use crate::format::escape;

/// How long a demo lock wait may last before the demo calls it a failure.
const WAIT: Duration = Duration::from_secs(10);

impl Demo<'_> {
    /// A transactional client on `endpoints`.
    pub(super) async fn txn_client(
        &self,
        endpoints: &[String],
        timeout: Option<Duration>,
    ) -> Result<TransactionClient, CliError> {
        let connecting = TransactionClient::connect(endpoints, Config::default());
        let client = match timeout {
            Some(t) => tokio::time::timeout(t, connecting)
                .await
                .map_err(|_| CliError::msg(format!("connect timed out after {t:?}")))?,
            None => connecting.await,
        };
        client.context("connect the transactional client")
    }

    /// Two optimistic transactions update one balance: the second to commit loses.
    pub(super) async fn write_conflict(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let key = self.key("txn-balance", 0);
        let shown = self.show_key(&key);
        let mut setup = c.begin().await.context("begin")?;
        setup.put(key.clone(), "100").await.context("put")?;
        setup.commit().await.context("commit")?;
        let mut a = c.begin().await.context("begin")?;
        let mut b = c.begin().await.context("begin")?;
        a.get(key.clone()).await.context("get")?;
        b.get(key.clone()).await.context("get")?;
        a.put(key.clone(), "90").await.context("put")?;
        b.put(key.clone(), "80").await.context("put")?;
        a.commit().await.context("first commit")?;
        let lost = b.commit().await;
        check(
            matches!(lost, Err(Error::WriteConflict { .. })),
            "the second optimistic commit did not meet a write conflict",
        )?;
        self.say(format!(
            "two optimistic transactions set {shown} from 100: the first commits 90, the second fails with a write conflict (retry it)"
        ))?;
        let now = c.begin().await.context("begin")?;
        let v = now.get(key.clone()).await.context("get")?;
        check(v.as_deref() == Some(&b"90"[..]), "the balance is not 90")?;
        Ok(())
    }

    /// A pessimistic transaction waits for another's lock and then reads what it committed.
    pub(super) async fn lock_wait(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let key = self.key("txn-balance", 0);
        let shown = self.show_key(&key);
        let mut holder = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .context("begin")?;
        holder
            .lock_keys([key.clone()], LockOptions::default())
            .await
            .context("lock")?;
        let waiter = {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut t = c.begin_with(TransactionOptions::pessimistic()).await?;
                // Woken by the holder's commit, the lock request learns the key changed after
                // its for_update_ts: a write conflict, answered by retrying the statement
                // (as TiDB does), which locks at a fresh for_update_ts.
                let mut retries = 0;
                let v = loop {
                    match t.get_for_update(key.clone()).await {
                        Err(Error::WriteConflict { .. }) if retries < 3 => retries += 1,
                        other => break other?,
                    }
                };
                t.rollback().await?;
                Ok::<_, Error>((v, started.elapsed(), retries))
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.put(key.clone(), "70").await.context("put")?;
        holder.commit().await.context("commit")?;
        let (value, waited, retries) = tokio::time::timeout(WAIT, waiter)
            .await
            .map_err(|_| CliError::msg("the waiting transaction never got the lock"))?
            .map_err(|e| CliError::msg(format!("the waiting task failed: {e}")))?
            .context("get_for_update")?;
        check(
            value.as_deref() == Some(&b"70"[..]),
            "the waiter did not read the holder's commit",
        )?;
        let retried = if retries > 0 {
            format!(", retried the statement {retries}x (the key changed while it waited)")
        } else {
            String::new()
        };
        self.say(format!(
            "a pessimistic transaction locked {shown}; another waited {} for it{retried}, then read the committed 70",
            crate::format::elapsed(waited)
        ))?;
        Ok(())
    }

    /// Two pessimistic transactions lock two keys in opposite orders: TiKV detects the
    /// deadlock and one of them fails, the other proceeds.
    pub(super) async fn deadlock(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let (a, b) = (self.key("txn-lock", 1), self.key("txn-lock", 2));
        let wait = LockOptions::default().with_wait(LockWait::Timeout(WAIT));
        let mut t1 = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .context("begin")?;
        let mut t2 = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .context("begin")?;
        t1.lock_keys([a.clone()], wait.clone())
            .await
            .context("lock")?;
        t2.lock_keys([b.clone()], wait.clone())
            .await
            .context("lock")?;
        let second = {
            let (b, wait) = (b.clone(), wait.clone());
            tokio::spawn(async move {
                let r = t1.lock_keys([b], wait).await.map(|_| ());
                let _ = t1.rollback().await;
                r
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other = t2.lock_keys([a], wait).await.map(|_| ());
        let _ = t2.rollback().await;
        let first = tokio::time::timeout(WAIT, second)
            .await
            .map_err(|_| CliError::msg("the deadlock was never broken"))?
            .map_err(|e| CliError::msg(format!("the locking task failed: {e}")))?;
        let deadlocks = [&first, &other]
            .iter()
            .filter(|r| matches!(r, Err(Error::Deadlock { .. })))
            .count();
        check(
            deadlocks == 1 && (first.is_ok() || other.is_ok()),
            format!("expected one deadlock victim, got {first:?} and {other:?}"),
        )?;
        self.say(
            "two pessimistic transactions locked two keys in opposite orders: TiKV found the deadlock, one failed and the other got its lock",
        )?;
        Ok(())
    }

    /// The same write committed with 2PC, async commit and 1PC.
    pub(super) async fn commit_protocols(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let mut shown = Vec::new();
        for (i, (name, options)) in [
            ("two-phase commit", TransactionOptions::default()),
            (
                "async commit",
                TransactionOptions::default().with_async_commit(true),
            ),
            (
                "one-phase commit",
                TransactionOptions::default().with_try_one_pc(true),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let key = self.key("txn-commit", i as u32);
            let started = Instant::now();
            let mut t = c.begin_with(options).await.context("begin")?;
            t.put(key.clone(), name).await.context("put")?;
            t.commit().await.context(name)?;
            let took = started.elapsed();
            let r = c.begin().await.context("begin")?;
            let v = r.get(key.clone()).await.context("get")?;
            check(
                v.as_deref() == Some(name.as_bytes()),
                format!("{name}: the value is not readable"),
            )?;
            shown.push(format!("{name} {}", crate::format::elapsed(took)));
        }
        self.say(format!("committed and read back: {}", shown.join(", ")))?;
        Ok(())
    }

    /// A GC round (embedded mock only): a read older than the safe point is refused.
    pub(super) async fn gc_round(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let old = c.current_timestamp().await.context("timestamp")?;
        let snapshot = c.snapshot(old);
        let now = c.current_timestamp().await.context("timestamp")?;
        let report = c.gc(now).await.context("gc")?;
        let refused = snapshot.get(self.key("txn-balance", 0)).await;
        check(
            matches!(refused, Err(Error::TxnAbortedByGc { .. })),
            "a read below the safe point was not refused",
        )?;
        self.say(format!(
            "GC advanced the safe point to {} ({} locks resolved); a snapshot from before it is refused: GC may have removed its versions",
            report.gc_safe_point.new, report.locks_resolved
        ))?;
        Ok(())
    }

    /// Deletes the transaction steps' keys in one transaction.
    pub(super) async fn txn_cleanup(&mut self, c: &TransactionClient) -> Result<(), CliError> {
        let t = c.begin().await.context("begin")?;
        let range = self.kind_range_prefix("txn-");
        let pairs = t.scan(range, 100).await.context("scan")?;
        t.rollback().await.context("rollback")?;
        let mut d = c.begin().await.context("begin")?;
        for p in &pairs {
            d.delete(p.key.clone()).await.context("delete")?;
        }
        d.commit().await.context("commit")?;
        self.say(format!(
            "deleted the {} transactional keys under '{}txn-'",
            pairs.len(),
            escape(&self.prefix)
        ))?;
        Ok(())
    }
}
