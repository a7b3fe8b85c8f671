"""Credits: what an edit costs, whether a member may make it, and what moderators can change.

`wallet` computes a member's credits from the ledger alone; `service` holds and settles them for
edits; `moderation` and `reports` are the rest of the one service object callers use. Callers
import from here, so how the package is split stays its own business.
"""

from bot.credits.service import CreditService
from bot.credits.values import (
    DM_GUILD,
    PERSONAL_GUILD,
    Balance,
    BudgetExceeded,
    ConfirmFirst,
    CreditError,
    Estimate,
    InsufficientCredits,
    MemberBlocked,
    QuotaView,
    Spend,
    credit_scope,
    period_bounds,
)
from storage.ledger import LedgerEntry, UsageRow

__all__ = [
    "DM_GUILD",
    "PERSONAL_GUILD",
    "Balance",
    "BudgetExceeded",
    "ConfirmFirst",
    "CreditError",
    "CreditService",
    "Estimate",
    "InsufficientCredits",
    "LedgerEntry",
    "MemberBlocked",
    "QuotaView",
    "Spend",
    "UsageRow",
    "credit_scope",
    "period_bounds",
]
