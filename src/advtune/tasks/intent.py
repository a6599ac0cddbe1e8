"""Intent classification: BANKING77, CLINC150 (in-scope; ``clinc150_oos`` adds out-of-scope) and HWU64.

Local layout (the sources' own files): ``banking77/{train,test}.csv`` and ``hwu64/{train,val,test}.csv``
(columns ``text``, ``category``; quoted CSV), ``clinc150/data_full.json`` (keys ``train``, ``val``,
``test``, ``oos_train``, ``oos_val``, ``oos_test``; items ``[text, intent]``). Hub fallbacks:
``PolyAI/banking77`` and ``clinc/clinc_oos`` (config ``plus``: its in-scope part is the same 15,000 /
3,000 / 4,500 split; its ``oos`` training part has 250 examples instead of data_full's 100). HWU64 has
no canonical hub copy, so it needs the local files.

Label ids follow the case-insensitive alphabetical order of the intent names (the hub's BANKING77
order); ``clinc150_oos`` appends ``oos`` as the 151st label. Every intent task also accepts the split
``test-difficult``: the CAT paper's hard test subset, chosen by
:func:`advtune.evaluation.difficult.difficult_subset` from the training and test sets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from datasets import Dataset

from ..errors import UsageError
from .base import HubSpec, LocalHubLoader, Rows, Task
from .glue import column

# fmt: off
BANKING77_LABELS = (
    "activate_my_card", "age_limit", "apple_pay_or_google_pay", "atm_support", "automatic_top_up",
    "balance_not_updated_after_bank_transfer", "balance_not_updated_after_cheque_or_cash_deposit",
    "beneficiary_not_allowed", "cancel_transfer", "card_about_to_expire", "card_acceptance", "card_arrival",
    "card_delivery_estimate", "card_linking", "card_not_working", "card_payment_fee_charged",
    "card_payment_not_recognised", "card_payment_wrong_exchange_rate", "card_swallowed", "cash_withdrawal_charge",
    "cash_withdrawal_not_recognised", "change_pin", "compromised_card", "contactless_not_working",
    "country_support", "declined_card_payment", "declined_cash_withdrawal", "declined_transfer",
    "direct_debit_payment_not_recognised", "disposable_card_limits", "edit_personal_details", "exchange_charge",
    "exchange_rate", "exchange_via_app", "extra_charge_on_statement", "failed_transfer", "fiat_currency_support",
    "get_disposable_virtual_card", "get_physical_card", "getting_spare_card", "getting_virtual_card",
    "lost_or_stolen_card", "lost_or_stolen_phone", "order_physical_card", "passcode_forgotten",
    "pending_card_payment", "pending_cash_withdrawal", "pending_top_up", "pending_transfer", "pin_blocked",
    "receiving_money", "Refund_not_showing_up", "request_refund", "reverted_card_payment?",
    "supported_cards_and_currencies", "terminate_account", "top_up_by_bank_transfer_charge",
    "top_up_by_card_charge", "top_up_by_cash_or_cheque", "top_up_failed", "top_up_limits", "top_up_reverted",
    "topping_up_by_card", "transaction_charged_twice", "transfer_fee_charged", "transfer_into_account",
    "transfer_not_received_by_recipient", "transfer_timing", "unable_to_verify_identity", "verify_my_identity",
    "verify_source_of_funds", "verify_top_up", "virtual_card_not_working", "visa_or_mastercard",
    "why_verify_identity", "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal",
)
CLINC150_LABELS = (
    "accept_reservations", "account_blocked", "alarm", "application_status", "apr", "are_you_a_bot", "balance",
    "bill_balance", "bill_due", "book_flight", "book_hotel", "calculator", "calendar", "calendar_update",
    "calories", "cancel", "cancel_reservation", "car_rental", "card_declined", "carry_on", "change_accent",
    "change_ai_name", "change_language", "change_speed", "change_user_name", "change_volume",
    "confirm_reservation", "cook_time", "credit_limit", "credit_limit_change", "credit_score", "current_location",
    "damaged_card", "date", "definition", "direct_deposit", "directions", "distance", "do_you_have_pets",
    "exchange_rate", "expiration_date", "find_phone", "flight_status", "flip_coin", "food_last", "freeze_account",
    "fun_fact", "gas", "gas_type", "goodbye", "greeting", "how_busy", "how_old_are_you", "improve_credit_score",
    "income", "ingredient_substitution", "ingredients_list", "insurance", "insurance_change", "interest_rate",
    "international_fees", "international_visa", "jump_start", "last_maintenance", "lost_luggage", "make_call",
    "maybe", "meal_suggestion", "meaning_of_life", "measurement_conversion", "meeting_schedule", "min_payment",
    "mpg", "new_card", "next_holiday", "next_song", "no", "nutrition_info", "oil_change_how", "oil_change_when",
    "order", "order_checks", "order_status", "pay_bill", "payday", "pin_change", "play_music", "plug_type",
    "pto_balance", "pto_request", "pto_request_status", "pto_used", "recipe", "redeem_rewards", "reminder",
    "reminder_update", "repeat", "replacement_card_duration", "report_fraud", "report_lost_card",
    "reset_settings", "restaurant_reservation", "restaurant_reviews", "restaurant_suggestion", "rewards_balance",
    "roll_dice", "rollover_401k", "routing", "schedule_maintenance", "schedule_meeting", "share_location",
    "shopping_list", "shopping_list_update", "smart_home", "spelling", "spending_history", "sync_device", "taxes",
    "tell_joke", "text", "thank_you", "time", "timer", "timezone", "tire_change", "tire_pressure", "todo_list",
    "todo_list_update", "traffic", "transactions", "transfer", "translate", "travel_alert", "travel_notification",
    "travel_suggestion", "uber", "update_playlist", "user_name", "vaccines", "w2", "weather",
    "what_are_your_hobbies", "what_can_i_ask_you", "what_is_your_name", "what_song", "where_are_you_from",
    "whisper_mode", "who_do_you_work_for", "who_made_you", "yes",
)
HWU64_LABELS = (
    "alarm_query", "alarm_remove", "alarm_set", "audio_volume_down", "audio_volume_mute", "audio_volume_up",
    "calendar_query", "calendar_remove", "calendar_set", "cooking_recipe", "datetime_convert", "datetime_query",
    "email_addcontact", "email_query", "email_querycontact", "email_sendemail", "general_affirm",
    "general_commandstop", "general_confirm", "general_dontcare", "general_explain", "general_joke",
    "general_negate", "general_praise", "general_quirky", "general_repeat", "iot_cleaning", "iot_coffee",
    "iot_hue_lightchange", "iot_hue_lightdim", "iot_hue_lightoff", "iot_hue_lighton", "iot_hue_lightup",
    "iot_wemo_off", "iot_wemo_on", "lists_createoradd", "lists_query", "lists_remove", "music_likeness",
    "music_query", "music_settings", "news_query", "play_audiobook", "play_game", "play_music", "play_podcasts",
    "play_radio", "qa_currency", "qa_definition", "qa_factoid", "qa_maths", "qa_stock", "recommendation_events",
    "recommendation_locations", "recommendation_movies", "social_post", "social_query", "takeaway_order",
    "takeaway_query", "transport_query", "transport_taxi", "transport_ticket", "transport_traffic",
    "weather_query",
)
# fmt: on

DIFFICULT_SIZES = {"clinc150": 750, "clinc150_oos": 750, "banking77": 770, "hwu64": 620}


def read_intent_csv(path: Path, split: str) -> Rows:
    """``text,category`` CSV with quoted fields (BANKING77 / HWU64 files)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    frame.columns = [str(c).strip() for c in frame.columns]
    return {"text_a": column(frame, ("text",), path), "label": column(frame, ("category", "label", "intent"), path)}


def clinc_reader(with_oos: bool):
    """Reader for CLINC150's ``data_full.json``: in-scope items, plus ``oos_<split>`` when ``with_oos``."""
    keys = {"train": "train", "validation": "val", "test": "test"}

    def read(path: Path, split: str) -> Rows:
        data = json.loads(path.read_text(encoding="utf-8"))
        key = keys[split]
        if key not in data:
            raise UsageError(f"{path}: no '{key}' list; keys are {', '.join(data)}")
        items = list(data[key]) + (list(data.get(f"oos_{key}", [])) if with_oos else [])
        return {"text_a": [t for t, _ in items], "label": [y for _, y in items]}

    return read


def drop_oos(task: Task, rows: Rows, split: str) -> Rows:
    """Keep in-scope examples only (the hub's ``plus`` config mixes ``oos`` into every split)."""
    keep = [i for i, y in enumerate(rows["label"]) if y != "oos"]
    return {k: ([v[i] for i in keep] if v is not None else None) for k, v in rows.items()}


@dataclass(frozen=True)
class IntentLoader:
    """A :class:`LocalHubLoader` plus the ``test-difficult`` split (CAT's hard subset of ``test``)."""

    base: LocalHubLoader
    difficult_size: int

    def __call__(self, task: Task, split: str, data_dir: Path | None, data_file: Path | None) -> Dataset:
        if split != "test-difficult":
            return self.base(task, split, data_dir, data_file)
        from ..evaluation.difficult import difficult_subset  # another module's job; imported only when asked

        train = self.base(task, task.train_split, data_dir, None)
        test = self.base(task, "test", data_dir, data_file)
        return difficult_subset(train, test, self.difficult_size)


def _intent(
    name: str,
    labels: tuple[str, ...],
    files: dict[str, tuple[str, ...]],
    read,
    hub: HubSpec | None,
    description: str,
    folder: str | None = None,
    post=None,
) -> Task:
    loader = LocalHubLoader(folder=folder or name, files=files, read=read, hub=hub, post=post)
    return Task(
        name=name,
        label_names=labels,
        metric="accuracy",
        pair=False,
        text_fields=("text",),
        eval_splits=("test",),
        splits=(*files, "test-difficult"),
        loader=IntentLoader(loader, DIFFICULT_SIZES[name]),
        description=description,
    )


_CLINC_FILES = {s: ("data_full.json",) for s in ("train", "validation", "test")}
_CLINC_HUB = HubSpec("clinc/clinc_oos", "plus", columns=("text",), label="intent")

BANKING77 = _intent(
    "banking77",
    BANKING77_LABELS,
    {"train": ("train.csv",), "test": ("test.csv",)},
    read_intent_csv,
    HubSpec("PolyAI/banking77", columns=("text",)),
    "BANKING77: 77 fine-grained online-banking intents",
)
CLINC150 = _intent(
    "clinc150",
    CLINC150_LABELS,
    _CLINC_FILES,
    clinc_reader(False),
    _CLINC_HUB,
    "CLINC150: 150 in-scope intents over 10 domains",
    post=drop_oos,
)
CLINC150_OOS = _intent(
    "clinc150_oos",
    (*CLINC150_LABELS, "oos"),
    _CLINC_FILES,
    clinc_reader(True),
    _CLINC_HUB,
    "CLINC150 with out-of-scope queries as a 151st label 'oos'",
    folder="clinc150",
)
HWU64 = _intent(
    "hwu64",
    HWU64_LABELS,
    {"train": ("train.csv",), "validation": ("val.csv",), "test": ("test.csv",)},
    read_intent_csv,
    None,
    "HWU64: 64 home-assistant intents (train / val / test split of the tk-knn release)",
)

INTENT_TASKS = (BANKING77, CLINC150, CLINC150_OOS, HWU64)
