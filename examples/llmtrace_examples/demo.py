"""``llmtrace demo``: a small offline support bot, recorded, with users' actions attached.

The app: "Acme refunds assistant". A keyword retriever over a bundled policy corpus, a tool-calling
agent (order look-up) on LangChain's fake chat model taught to read its context, a Pydantic parser
for the structured answer, and a business validation rule. Five customers ask; their actions
(accepted, edited, retried, abandoned, rated) are attached by trace id.
"""

from __future__ import annotations

import json
import re
from typing import Any

KEYWORDS = {
    "refund-window#1": {"return", "refund", "money", "back", "days", "get"},
    "electronics#2": {"opened", "electronics", "blender", "headphones", "fee"},
    "gift-cards#1": {"gift", "card", "voucher"},
    "damaged#1": {"damaged", "broken", "arrived"},
    "shipping#3": {"shipping", "delivery", "arrived"},
    "sale-items#1": {"sale", "final", "jacket"},
}
POLICIES = {
    "refund-window#1": "Refunds are accepted within 30 days of delivery for unused items.",
    "electronics#2": "Opened electronics can be refunded with a 15% restocking fee.",
    "gift-cards#1": "Gift cards and vouchers are never refundable.",
    "damaged#1": "Items that arrive damaged are refunded in full, including shipping, at any time.",
    "shipping#3": "Standard shipping fees are not refunded unless the item was damaged.",
    "sale-items#1": "Final-sale items marked as such are not refundable.",
}
ORDERS = {
    "A-1001": {"item": "blender (electronics, opened)", "total": 89.00, "days_since_delivery": 12},
    "A-1002": {"item": "gift card", "total": 50.00, "days_since_delivery": 3},
    "A-1003": {"item": "lamp (arrived damaged)", "total": 40.00, "days_since_delivery": 45},
    "A-1004": {"item": "jacket (final sale)", "total": 120.00, "days_since_delivery": 5},
    "A-1005": {"item": "headphones (electronics, opened)", "total": 200.00, "days_since_delivery": 20},
}
QUESTIONS = [
    ("u-ana", "A-1001", "Can I return the blender from order A-1001? I opened it.", "accepted"),
    ("u-ben", "A-1002", "I want my money back for the gift card in A-1002.", "abandoned"),
    ("u-chen", "A-1003", "My lamp (order A-1003) arrived broken. Refund please?", "edited"),
    ("u-dee", "A-1004", "Refund for jacket A-1004?", "retried"),
    ("u-eli", "A-1005", "How much do I get back for the headphones in A-1005?", "rated"),
]
SYSTEM = ("You are Acme's refunds assistant. Use the policy context and the order tools. Answer as JSON "
          "with decision, refund_amount, citations and reply.")


def _build_app():
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_core.output_parsers import PydanticOutputParser
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import BaseModel

    class RefundAnswer(BaseModel):
        decision: str
        refund_amount: float
        citations: list[str]
        reply: str

    class PolicyRetriever(BaseRetriever):
        k: int = 3

        def _get_relevant_documents(self, query: str, *, run_manager=None) -> list[Document]:
            words = set(re.findall(r"[a-z]+", query.lower()))
            scored = [(len(words & KEYWORDS[pid]) / len(KEYWORDS[pid]), pid, text) for pid, text in POLICIES.items()]
            scored.sort(key=lambda s: (-s[0], s[1]))
            return [Document(id=pid, page_content=text, metadata={"score": round(score, 3), "source": "policies.md"})
                    for score, pid, text in scored[: self.k]]

    @tool
    def lookup_order(order_id: str) -> str:
        """Look up an order: item, total paid and days since delivery."""
        order = ORDERS.get(order_id)
        if order is None:
            raise KeyError(f"no order {order_id}")
        return json.dumps({"order_id": order_id, **order})

    class RefundsModel(GenericFakeChatModel):
        """A fake chat model that reasons like a careful one would, from its context and tool results."""

        messages: Any = None
        model: str = "gpt-4o-mini"
        chatty: bool = False

        def _get_ls_params(self, stop=None, **kwargs):
            params = super()._get_ls_params(stop=stop, **kwargs)
            params.update(ls_provider="openai", ls_model_name=self.model)
            return params

        def bind_tools(self, tools, **kwargs):
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            prompt_tokens = sum(len(str(m.content)) for m in messages) // 4
            question = next(m.content for m in messages if m.type == "human")
            results = [json.loads(m.content) for m in messages if isinstance(m, ToolMessage)]
            if not results:
                order_id = re.search(r"[A-Z]-\d{4}", question).group(0)
                msg = AIMessage(content="", tool_calls=[{"name": "lookup_order", "args": {"order_id": order_id},
                                                         "id": f"call_{order_id}", "type": "tool_call"}])
                finish = "tool_calls"
            else:
                msg = AIMessage(content=self._decide(results[0], question))
                finish = "stop"
            out_tokens = max(1, len(str(msg.content)) // 4 + 8 * len(msg.tool_calls))
            msg.usage_metadata = {"input_tokens": prompt_tokens, "output_tokens": out_tokens,
                                  "total_tokens": prompt_tokens + out_tokens}
            msg.response_metadata = {"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": finish}
            return ChatResult(generations=[ChatGeneration(message=msg)])

        def _decide(self, order: dict, question: str) -> str:
            item, total = order["item"], order["total"]
            if "gift card" in item:
                decision, amount, cites, reply = "deny", 0.0, ["gift-cards#1"], "Gift cards cannot be refunded."
            elif "damaged" in item:
                decision, amount, cites = "approve", total, ["damaged#1"]
                reply = f"Sorry about the damage: we refund the full {total:.2f} EUR."
            elif "final sale" in item:
                decision, amount, cites, reply = "deny", 0.0, ["sale-items#1"], "Final-sale items are not refundable."
            elif "electronics" in item:
                # the deliberate bug the demo's validation catches: the fee is not applied
                decision, amount, cites = "approve", total, ["refund-window#1", "electronics#2"]
                reply = f"You can return it within 30 days; we refund {amount:.2f} EUR."
            else:
                decision, amount, cites, reply = "approve", total, ["refund-window#1"], "Approved."
            body = json.dumps({"decision": decision, "refund_amount": amount, "citations": cites, "reply": reply})
            return f"Sure! Here is the answer: {body}" if self.chatty else body

    retriever = PolicyRetriever()
    parser = PydanticOutputParser(pydantic_object=RefundAnswer)
    tools = [lookup_order]

    def answer(question: str, model: Any) -> Any:
        docs = retriever.invoke(question)
        context = "\n".join(f"[{d.id}] {d.page_content}" for d in docs)
        bound = model.bind_tools(tools, temperature=0.1)
        messages = [SystemMessage(f"{SYSTEM}\n\nPolicy context:\n{context}"), HumanMessage(question)]
        while True:
            ai = bound.invoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                break
            for tc in ai.tool_calls:
                messages.append(lookup_order.invoke(tc))
        return parser.invoke(ai)

    model = RefundsModel()
    chatty = RefundsModel(chatty=True, model="gpt-4o-mini")
    app = RunnableLambda(lambda q: answer(q, model), name="refunds_assistant")
    chatty_app = RunnableLambda(lambda q: answer(q, chatty), name="refunds_assistant")
    return app, chatty_app


def _validate(tracer, trace_id: str, order_id: str, result: Any) -> None:
    order = ORDERS[order_id]
    fee_ok = "electronics" not in order["item"] or result.refund_amount <= round(order["total"] * 0.85, 2)
    tracer.record_validation(trace_id, rule="restocking_fee_applied", passed=fee_ok,
                             detail=None if fee_ok else f"refund {result.refund_amount:.2f} for opened electronics "
                                                        f"(total {order['total']:.2f}) skips the 15% fee")
    cited = set(result.citations) <= set(POLICIES)
    tracer.record_validation(trace_id, rule="citations_exist", passed=cited)


def run_demo(url: str | None = None, *, show: bool = True, export_path: str | None = "llmtrace-eval.jsonl",
             out=print) -> dict[str, Any]:
    """Record the demo app into ``url`` (default: the Tracer's default); return what it did."""
    import llmtrace

    try:
        from llmtrace_langchain import LLMTraceCallbackHandler
    except ImportError as exc:  # the core never needs LangChain; the demo does
        raise llmtrace.ConfigError("the demo needs the LangChain integration: pip install llmtrace-langchain") from exc

    tracer = llmtrace.Tracer(url)
    handler = LLMTraceCallbackHandler(tracer)
    app, chatty_app = _build_app()
    traces = []
    for user, order_id, question, action in QUESTIONS:
        config = {"callbacks": [handler], "metadata": {"llmtrace_user_id": user, "llmtrace_feature": "refunds",
                                                         "llmtrace_team": "support", "llmtrace_prompt_version": "refunds-v7",
                                                         "order_id": order_id}}
        runner = chatty_app if action == "retried" else app
        try:
            result = runner.invoke(question, config=config)
            _validate(tracer, handler.last_trace_id, order_id, result)
            outcome = f"{result.decision} {result.refund_amount:.2f} EUR"
        except Exception as exc:  # the chatty model's answer does not parse: the user retries
            outcome = f"failed: {type(exc).__name__}"
        tid = handler.last_trace_id
        if action == "edited":
            tracer.record_feedback(tid, "edited", correction="We refund 40.00 EUR plus 4.99 EUR shipping.")
        elif action == "rated":
            tracer.record_feedback(tid, "rated", score=2, comment="the fee was not deducted")
        else:
            tracer.record_feedback(tid, action)
        traces.append((tid, user, action, outcome))
    tracer.flush()
    out(f"llmtrace demo: recorded {len(traces)} conversations of the Acme refunds assistant into {tracer.url}")
    for tid, user, action, outcome in traces:
        out(f"  {tid}  {user:<7} {outcome:<26} user {action}")
    shown = traces[0][0]
    if show:
        out("")
        out(tracer.get_trace(shown).render())
    li_ids: list[str] = []
    try:
        import llmtrace_llamaindex  # noqa: F401 - the LlamaIndex half runs when its integration is installed
    except ImportError:
        out("(install llmtrace-llamaindex to record the LlamaIndex half of the demo too)")
    else:
        from llmtrace_examples.demo_llamaindex import run as run_llamaindex

        out("")
        li_ids = run_llamaindex(tracer, POLICIES, out)
        tracer.flush()
        if show:
            out("")
            out(tracer.get_trace(li_ids[0]).render())
    exported = None
    if export_path:
        exported = tracer.export_eval_set(export_path, feature="refunds")
        out("")
        out(f"exported {exported} feedback-labelled example(s) to {export_path}")
    out("")
    out("by feature (llmtrace stats --by feature):")
    for row in tracer.stats("feature"):
        cost = "no price" if row["cost_usd"] is None else f"${row['cost_usd']:.6f}"
        out(f"  {row['feature'] or '-':<10} {row['calls']:>3} LLM calls  {row['avg_input_tokens'] or 0:>6.0f} tokens in/call  "
            f"{cost}  parse failures {row['parse_failure_rate']:.0%}  failed checks {row['validation_failure_rate']:.0%}  "
            f"users: {row['feedback_accepted']} accepted, {row['feedback_edited']} edited, "
            f"{row['feedback_retried']} retried, {row['feedback_abandoned']} abandoned")
    out("")
    out(f"next: llmtrace show {traces[2][0]} --json   |   llmtrace ls --action edited   |   "
        "llmtrace stats --by model   |   llmtrace alerts")
    tracer.close()
    return {"traces": traces, "shown": shown, "exported": exported, "llamaindex": li_ids}
