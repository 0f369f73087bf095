//! The kinds of event that move money, as `wallet.events.event_type` stores them.

/// An event that moves posted money (`amount`) or pending money (`pending_delta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoneyEventType {
    Transfer,
    HoldPlaced,
    HoldConfirmed,
    HoldCancelled,
    HoldExpired,
}

impl MoneyEventType {
    pub const ALL: [MoneyEventType; 5] = [
        MoneyEventType::Transfer,
        MoneyEventType::HoldPlaced,
        MoneyEventType::HoldConfirmed,
        MoneyEventType::HoldCancelled,
        MoneyEventType::HoldExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoneyEventType::Transfer => "transfer",
            MoneyEventType::HoldPlaced => "hold_placed",
            MoneyEventType::HoldConfirmed => "hold_confirmed",
            MoneyEventType::HoldCancelled => "hold_cancelled",
            MoneyEventType::HoldExpired => "hold_expired",
        }
    }
}
