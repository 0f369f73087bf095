//! The batch of transfers, judged in memory: pure Rust, no Postgres.
//!
//! `storage` locks and reads every account the batch touches, looks its idempotency keys up,
//! and hands both to [`judge`], which applies the transfers one after the other, in input
//! order, exactly as single calls would (same rules, same precedence), with linked chains that
//! succeed or fail together. The result says what to write: the final balances and one event
//! per posted transfer.

use std::collections::HashMap;

use crate::account::AccountState;
use crate::error::WalletError;
use crate::text::Text;
use crate::transfer::{self, PriorTransfer, TransferRequest};

/// One transfer of a batch as it arrived (any field may be NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput<'a> {
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: Option<i64>,
    pub idempotency_key: Option<&'a [u8]>,
    /// Linked to the next transfer: the chain runs to the first transfer not marked linked.
    pub linked: bool,
}

/// The answer for one transfer, in the documented order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    /// Posted now; the transfer id.
    Ok(i64),
    /// The key was already used with the same parameters; the first transfer's id.
    Exists(i64),
    /// Refused for this reason.
    Rejected(WalletError),
    /// This transfer was fine, but another member of its linked chain failed.
    LinkedEventFailed,
    /// The batch ended inside a linked chain (the last transfer is marked linked).
    LinkedEventChainOpen,
}

impl BatchResult {
    /// The result code returned by `wallet.transfer_batch`, and its number on the wire.
    pub fn code(&self) -> (i64, &'static str) {
        match self {
            BatchResult::Ok(_) => (0, "ok"),
            BatchResult::Exists(_) => (1, "exists"),
            BatchResult::LinkedEventFailed => (2, "linked_event_failed"),
            BatchResult::LinkedEventChainOpen => (3, "linked_event_chain_open"),
            BatchResult::Rejected(e) => (100 + wire_number(e), e.name()),
        }
    }

    pub fn transfer_id(&self) -> Option<i64> {
        match self {
            BatchResult::Ok(id) | BatchResult::Exists(id) => Some(*id),
            _ => None,
        }
    }
}

/// A small stable number per rejection (the digits of its WA SQLSTATE; 40001 is 40), which the
/// array form of the batch (`wallet._transfer_batch` of schemas 0.2.0 to 0.4.0) returns.
fn wire_number(error: &WalletError) -> i64 {
    match error.sqlstate().strip_prefix("WA") {
        Some(digits) => digits.parse().unwrap_or(99),
        None => 40,
    }
}

/// A transfer to record as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// Index of the transfer in the batch.
    pub index: usize,
    pub request: TransferRequest,
    /// Its currency, an index into `Judgement::currencies`.
    pub currency: usize,
    pub debit_balance: i64,
    pub credit_balance: i64,
}

/// One transfer's answer as judging leaves it: final, or waiting for the id of an event that
/// storage has yet to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Final: a rejection, a repeat of a stored transfer, the failure of its chain.
    Final(BatchResult),
    /// Posted: the `n`th of `Judgement::postings`; answered `Ok` with its event's id.
    Posted(usize),
    /// A repeat (same key, same parameters) of the `n`th posting, earlier in this batch;
    /// answered `Exists` with that posting's id.
    RepeatOf(usize),
}

/// What the batch decided.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Per input transfer, in input order.
    pub results: Vec<Judged>,
    /// Transfers to record, in input order.
    pub postings: Vec<Posting>,
    /// The currencies of the postings, each once.
    pub currencies: Vec<Text>,
}

impl Judgement {
    /// The answers in input order, once storage has written the postings: `ids[n]` is the id
    /// of posting `n` (its event's seq).
    pub fn answers(self, ids: &[i64]) -> Vec<BatchResult> {
        assert_eq!(ids.len(), self.postings.len(), "an id per posting");
        self.results
            .into_iter()
            .map(|judged| match judged {
                Judged::Final(result) => result,
                Judged::Posted(n) => BatchResult::Ok(ids[n]),
                Judged::RepeatOf(n) => BatchResult::Exists(ids[n]),
            })
            .collect()
    }
}

/// Checks that need no stored state, per transfer, in the single-call precedence.
pub fn check_arguments(inputs: &[BatchInput]) -> Vec<Result<TransferRequest, WalletError>> {
    inputs
        .iter()
        .map(|t| {
            transfer::check_transfer_arguments(
                t.debit_account_id,
                t.credit_account_id,
                t.amount,
                t.idempotency_key,
            )
        })
        .collect()
}

/// Applies the batch in input order against `accounts` (left at the final balances). A chain is
/// a run of transfers marked linked plus the first one after them that is not; a transfer not
/// linked to anything is a chain of one. `prior` holds the stored events of the batch's keys.
pub fn judge<'a>(
    inputs: &[BatchInput<'a>],
    checked: &[Result<TransferRequest, WalletError>],
    prior: &HashMap<Vec<u8>, PriorTransfer>,
    accounts: &mut HashMap<i64, AccountState>,
) -> Judgement {
    let n = inputs.len();
    let mut judgement = Judgement {
        results: Vec::with_capacity(n),
        postings: Vec::new(),
        currencies: Vec::new(),
    };
    let mut ledger = Ledger {
        accounts,
        posted_keys: HashMap::new(),
        undo: Vec::new(),
        currencies: Vec::new(),
    };
    let mut start = 0;
    while start < n {
        let mut end = start;
        while inputs[end].linked && end + 1 < n {
            end += 1;
        }
        if inputs[end].linked {
            // The batch ends inside the chain: none of it is applied.
            judgement
                .results
                .extend((start..=end).map(|_| Judged::Final(BatchResult::LinkedEventChainOpen)));
            break;
        }
        let postings_before = judgement.postings.len();
        ledger.undo.clear();
        let mut keys_added: Vec<&'a [u8]> = Vec::new();
        let mut failure: Option<(usize, BatchResult)> = None;
        for i in start..=end {
            let result =
                ledger.judge_one(i, &inputs[i], &checked[i], prior, &mut judgement.postings);
            match result {
                Judged::Final(
                    failed @ (BatchResult::Rejected(_)
                    | BatchResult::LinkedEventFailed
                    | BatchResult::LinkedEventChainOpen),
                ) => {
                    failure = Some((i, failed));
                    break;
                }
                judged => {
                    if let (Judged::Posted(_), Some(key)) = (&judged, inputs[i].idempotency_key) {
                        keys_added.push(key);
                    }
                    judgement.results.push(judged);
                }
            }
        }
        if let Some((failed_at, reason)) = failure {
            // The chain fails as a whole: take its balances, postings and keys back.
            ledger.rollback();
            judgement.postings.truncate(postings_before);
            for key in keys_added {
                ledger.posted_keys.remove(key);
            }
            judgement.results.truncate(start);
            for i in start..=end {
                judgement.results.push(Judged::Final(if i == failed_at {
                    reason.clone()
                } else {
                    BatchResult::LinkedEventFailed
                }));
            }
        }
        start = end + 1;
    }
    judgement.currencies = ledger.currencies;
    judgement
}

/// The batch's running state: account balances, keys posted so far, undo log of the chain.
struct Ledger<'m, 'a> {
    accounts: &'m mut HashMap<i64, AccountState>,
    /// Keys posted so far in this batch: the posting's number and its transfer.
    posted_keys: HashMap<&'a [u8], (usize, TransferRequest)>,
    undo: Vec<(i64, i64)>,
    /// Currencies seen so far (a batch has few: a linear search beats hashing).
    currencies: Vec<Text>,
}

impl<'a> Ledger<'_, 'a> {
    fn rollback(&mut self) {
        for (account_id, balance) in self.undo.drain(..).rev() {
            self.accounts
                .get_mut(&account_id)
                .expect("undo of a known account")
                .balance = balance;
        }
    }

    fn judge_one(
        &mut self,
        index: usize,
        input: &BatchInput<'a>,
        check: &Result<TransferRequest, WalletError>,
        prior: &HashMap<Vec<u8>, PriorTransfer>,
        postings: &mut Vec<Posting>,
    ) -> Judged {
        let rejected = |e| Judged::Final(BatchResult::Rejected(e));
        let request = match check {
            Ok(request) => request.clone(),
            Err(e) => return rejected(e.clone()),
        };
        if let Some(key) = input.idempotency_key {
            if let Some(first) = prior.get(key) {
                return Judged::Final(match transfer::replay_answer(key, &request, first) {
                    Ok(id) => BatchResult::Exists(id),
                    Err(e) => BatchResult::Rejected(e),
                });
            }
            if let Some((first_posting, first_request)) = self.posted_keys.get(key) {
                // Posted earlier in this batch: its id is known once storage has written it.
                return if *first_request == request {
                    Judged::RepeatOf(*first_posting)
                } else {
                    rejected(WalletError::IdempotencyKeyReused {
                        key: Text::from(key),
                        transfer_id: None,
                        debit_account_id: request.debit_account_id,
                        credit_account_id: request.credit_account_id,
                        amount: request.amount,
                    })
                };
            }
        }
        let debit = self.accounts.get(&request.debit_account_id);
        let credit = self.accounts.get(&request.credit_account_id);
        if let Err(e) = transfer::check_transfer_against(&request, debit, credit) {
            return rejected(e);
        }
        let name = &debit.expect("checked").currency;
        let currency = match self.currencies.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                self.currencies.push(name.clone());
                self.currencies.len() - 1
            }
        };
        let debit_balance = self.apply(request.debit_account_id, -request.amount);
        let credit_balance = self.apply(request.credit_account_id, request.amount);
        let posting = postings.len();
        if let Some(key) = input.idempotency_key {
            self.posted_keys.insert(key, (posting, request.clone()));
        }
        postings.push(Posting {
            index,
            request,
            currency,
            debit_balance,
            credit_balance,
        });
        Judged::Posted(posting)
    }

    /// Adds `delta` to an account's balance (bounds checked before); returns the new balance.
    fn apply(&mut self, account_id: i64, delta: i64) -> i64 {
        let account = self.accounts.get_mut(&account_id).expect("checked");
        self.undo.push((account_id, account.balance));
        account.balance += delta;
        account.balance
    }
}

/// Links the events of a batch's postings, `(debit, credit)` accounts with their event numbers
/// `seqs` (increasing), into their accounts' chains (see "History paths" in sql/schema.sql):
/// returns each event's `(debit_prev, credit_prev)`. `last` holds each account's newest money
/// event before the batch (`None`: it has none) and ends holding its newest after it.
pub fn chain_links(
    accounts: &[(i64, i64)],
    seqs: &[i64],
    last: &mut HashMap<i64, Option<i64>>,
) -> Vec<(Option<i64>, Option<i64>)> {
    accounts
        .iter()
        .zip(seqs)
        .map(|(&(debit, credit), &seq)| {
            let debit_prev = last.insert(debit, Some(seq)).flatten();
            let credit_prev = last.insert(credit, Some(seq)).flatten();
            (debit_prev, credit_prev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_links_point_each_event_at_its_accounts_previous_one() {
        // Account 1 had event 5 before the batch, 2 and 3 had none.
        let mut last = HashMap::from([(1, Some(5)), (2, None), (3, None)]);
        let links = chain_links(&[(1, 2), (2, 3), (3, 1)], &[10, 11, 12], &mut last);
        assert_eq!(
            links,
            vec![(Some(5), None), (Some(10), None), (Some(11), Some(10))]
        );
        assert_eq!(
            last,
            HashMap::from([(1, Some(12)), (2, Some(11)), (3, Some(12))])
        );
    }

    fn accounts(balances: &[(i64, i64)]) -> HashMap<i64, AccountState> {
        balances
            .iter()
            .map(|&(id, balance)| (id, AccountState::for_tests(id, balance)))
            .collect()
    }

    fn t(debit: i64, credit: i64, amount: i64) -> BatchInput<'static> {
        BatchInput {
            debit_account_id: Some(debit),
            credit_account_id: Some(credit),
            amount: Some(amount),
            idempotency_key: None,
            linked: false,
        }
    }

    fn run(inputs: &[BatchInput], state: &mut HashMap<i64, AccountState>) -> Vec<&'static str> {
        let checked = check_arguments(inputs);
        let judgement = judge(inputs, &checked, &HashMap::new(), state);
        let ids: Vec<i64> = (0..judgement.postings.len() as i64).collect();
        judgement.answers(&ids).iter().map(|r| r.code().1).collect()
    }

    #[test]
    fn transfers_apply_in_order_like_single_calls() {
        let mut state = accounts(&[(1, 100), (2, 0), (3, 0)]);
        // 2 has nothing until the first transfer pays it.
        let codes = run(
            &[t(2, 3, 50), t(1, 2, 100), t(2, 3, 50), t(1, 3, 1)],
            &mut state,
        );
        assert_eq!(
            codes,
            ["insufficient_funds", "ok", "ok", "insufficient_funds"]
        );
        assert_eq!(state[&1].balance, 0);
        assert_eq!(state[&2].balance, 50);
        assert_eq!(state[&3].balance, 50);
    }

    #[test]
    fn every_rejection_reason_is_reported_and_the_batch_goes_on() {
        let mut state = accounts(&[(1, 100), (2, 0)]);
        let mut unknown = t(1, 9, 5);
        unknown.debit_account_id = Some(1);
        let inputs = [
            BatchInput {
                debit_account_id: None,
                ..t(1, 2, 5)
            },
            t(1, 2, 0),
            t(1, 1, 5),
            unknown,
            BatchInput {
                idempotency_key: Some(b""),
                ..t(1, 2, 5)
            },
            t(1, 2, 5),
        ];
        let codes = run(&inputs, &mut state);
        assert_eq!(
            codes,
            [
                "invalid_argument",
                "invalid_amount",
                "same_account",
                "account_not_found",
                "invalid_idempotency_key",
                "ok"
            ]
        );
        assert_eq!(state[&2].balance, 5);
    }

    #[test]
    fn a_failed_member_fails_its_linked_chain_and_nothing_else() {
        let mut state = accounts(&[(1, 100), (2, 0), (3, 0)]);
        let linked = |mut x: BatchInput<'static>| {
            x.linked = true;
            x
        };
        let inputs = [
            t(1, 2, 10),         // alone: ok
            linked(t(1, 2, 20)), // chain: 20 ok ...
            linked(t(2, 3, 25)), // ... 2 has 30 now: ok ...
            t(1, 3, 1000),       // ... insufficient: the chain fails
            t(1, 3, 5),          // alone: ok
        ];
        let codes = run(&inputs, &mut state);
        assert_eq!(
            codes,
            [
                "ok",
                "linked_event_failed",
                "linked_event_failed",
                "insufficient_funds",
                "ok"
            ]
        );
        assert_eq!(state[&1].balance, 85);
        assert_eq!(state[&2].balance, 10);
        assert_eq!(state[&3].balance, 5);
    }

    #[test]
    fn a_chain_that_succeeds_posts_every_member() {
        let mut state = accounts(&[(1, 100), (2, 0), (3, 0)]);
        let inputs = [
            BatchInput {
                linked: true,
                ..t(1, 2, 60)
            },
            t(2, 3, 60),
        ];
        let checked = check_arguments(&inputs);
        let judgement = judge(&inputs, &checked, &HashMap::new(), &mut state);
        assert_eq!(judgement.postings.len(), 2);
        assert_eq!(judgement.postings[1].debit_balance, 0);
        assert_eq!(judgement.postings[1].credit_balance, 60);
    }

    #[test]
    fn an_open_chain_at_the_end_fails_whole() {
        let mut state = accounts(&[(1, 100), (2, 0)]);
        let inputs = [
            t(1, 2, 1),
            BatchInput {
                linked: true,
                ..t(1, 2, 2)
            },
            BatchInput {
                linked: true,
                ..t(1, 2, 3)
            },
        ];
        let codes = run(&inputs, &mut state);
        assert_eq!(
            codes,
            ["ok", "linked_event_chain_open", "linked_event_chain_open"]
        );
        assert_eq!(state[&2].balance, 1);
    }

    #[test]
    fn keys_repeat_within_the_batch_and_against_stored_events() {
        let mut state = accounts(&[(1, 100), (2, 0)]);
        let keyed = |key: &'static str, amount| BatchInput {
            idempotency_key: Some(key.as_bytes()),
            ..t(1, 2, amount)
        };
        let mut prior = HashMap::new();
        prior.insert(
            b"old".to_vec(),
            PriorTransfer {
                transfer_id: 7,
                event_type: "transfer".into(),
                debit_account_id: Some(1),
                credit_account_id: Some(2),
                amount: Some(4),
                metadata_matches: true,
            },
        );
        let inputs = [
            keyed("a", 10),
            keyed("a", 10),
            keyed("a", 11),
            keyed("old", 4),
            keyed("old", 5),
        ];
        let checked = check_arguments(&inputs);
        let judgement = judge(&inputs, &checked, &prior, &mut state);
        // The in-batch repeat waits for the id of posting 0, as does its first.
        assert_eq!(judgement.results[0], Judged::Posted(0));
        assert_eq!(judgement.results[1], Judged::RepeatOf(0));
        assert_eq!(judgement.postings.len(), 1);
        assert_eq!(state[&2].balance, 10);
        let answers = judgement.answers(&[31]);
        let codes: Vec<_> = answers.iter().map(|r| r.code().1).collect();
        assert_eq!(
            codes,
            [
                "ok",
                "exists",
                "idempotency_key_reused",
                "exists",
                "idempotency_key_reused"
            ]
        );
        assert_eq!(answers[0], BatchResult::Ok(31));
        assert_eq!(answers[1], BatchResult::Exists(31));
        assert_eq!(answers[3], BatchResult::Exists(7));
        // A different transfer under a key this batch used: no id to name yet, and none made up.
        let BatchResult::Rejected(reused) = &answers[2] else {
            panic!("rejected")
        };
        assert_eq!(
            reused.to_string(),
            "idempotency key \"a\" was already used by an earlier transfer of this batch with different parameters (now: 11 from account 1 to account 2)"
        );
    }

    #[test]
    fn a_key_of_a_failed_chain_is_free_again() {
        let mut state = accounts(&[(1, 100), (2, 0)]);
        let inputs = [
            BatchInput {
                idempotency_key: Some(b"k"),
                linked: true,
                ..t(1, 2, 10)
            },
            t(1, 2, 1000),
            BatchInput {
                idempotency_key: Some(b"k"),
                ..t(1, 2, 10)
            },
        ];
        let codes = run(&inputs, &mut state);
        assert_eq!(codes, ["linked_event_failed", "insufficient_funds", "ok"]);
        assert_eq!(state[&2].balance, 10);
    }

    #[test]
    fn each_posting_names_its_currency_once_per_batch() {
        let mut state = accounts(&[(1, 100), (2, 0), (3, 100), (4, 0)]);
        for id in [3, 4] {
            state.get_mut(&id).unwrap().currency = "USD".into();
        }
        let inputs = [t(1, 2, 5), t(3, 4, 5), t(2, 1, 1), t(1, 3, 1), t(4, 3, 1)];
        let checked = check_arguments(&inputs);
        let judgement = judge(&inputs, &checked, &HashMap::new(), &mut state);
        let ok = |n| Judged::Posted(n);
        assert_eq!(judgement.results[..3], [ok(0), ok(1), ok(2)]);
        assert_eq!(judgement.results[4], ok(3));
        assert!(matches!(
            &judgement.results[3],
            Judged::Final(BatchResult::Rejected(WalletError::CurrencyMismatch { .. }))
        ));
        assert_eq!(judgement.currencies, [Text::from("EUR"), Text::from("USD")]);
        let named: Vec<&str> = judgement
            .postings
            .iter()
            .map(|p| std::str::from_utf8(judgement.currencies[p.currency].as_bytes()).unwrap())
            .collect();
        assert_eq!(named, ["EUR", "USD", "EUR", "USD"]);
    }
}
