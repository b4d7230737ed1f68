"""LangChain apps for the tests, built from LangChain's own classes and the fake chat model it ships.

``ScriptedChatModel`` is LangChain's ``GenericFakeChatModel`` taught two things real providers do
and the shipped fake does not: tool calling (``bind_tools``) and reporting usage / model version,
also when streaming. Each scripted item is an ``AIMessage`` to answer with or an exception to raise.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import PydanticOutputParser, StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, PrivateAttr

SYSTEM = "You are the refunds assistant of Acme. Cite policy ids."
USAGE = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150,
         "input_token_details": {"cache_read": 20}, "output_token_details": {"reasoning": 5}}


def answer(text: str, *, usage: dict | None = USAGE, version: str | None = "gpt-4o-2024-08-06",
           tool_calls: list[dict] | None = None, finish: str = "stop") -> AIMessage:
    meta = {"finish_reason": finish}
    if version:
        meta["model_name"] = version
    return AIMessage(content=text, usage_metadata=usage, response_metadata=meta, tool_calls=tool_calls or [])


def tool_call(name: str, args: dict, call_id: str) -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


class ScriptedChatModel(GenericFakeChatModel):
    script: list[Any]
    model: str = "gpt-4o"
    messages: Any = None  # GenericFakeChatModel's own iterator is not used
    _i: int = PrivateAttr(default=0)

    def _next(self) -> AIMessage:
        item = self.script[min(self._i, len(self.script) - 1)]  # the last item repeats
        self._i += 1
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item()
        return item.model_copy()

    def _get_ls_params(self, stop=None, **kwargs):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = self.model
        return params

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        msg = self._next()
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        msg = self._next()
        words = msg.content.split(" ") if isinstance(msg.content, str) and msg.content else []
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        last = AIMessageChunk(content="", usage_metadata=msg.usage_metadata,
                              response_metadata=msg.response_metadata,
                              tool_call_chunks=[{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"],
                                                 "index": i} for i, c in enumerate(msg.tool_calls)])
        yield ChatGenerationChunk(message=last)


class PolicyRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager=None) -> list[Document]:
        return list(self.docs)


POLICY_DOCS = [
    Document(id="pol-7#2", page_content="Refunds are accepted within 30 days of delivery.",
             metadata={"score": 0.91}),
    Document(page_content="Opened electronics carry a 15% restocking fee.",
             metadata={"source": "kb/electronics.md", "score": 0.74}),
    Document(page_content="Gift cards are never refundable.", metadata={"doc_id": "gift-1", "score": 0.42}),
]


class Refund(BaseModel):
    eligible: bool
    days_left: int
    citations: list[str]


REFUND_JSON = json.dumps({"eligible": True, "days_left": 12, "citations": ["pol-7#2"]})


def rag_chain(model, parser=None):
    parser = parser or PydanticOutputParser(pydantic_object=Refund)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "Context:\n{context}\n\nQ: {question}")])
    retriever = PolicyRetriever(docs=POLICY_DOCS)
    return ({"context": retriever | RunnableLambda(lambda ds: "\n".join(d.page_content for d in ds)),
             "question": RunnablePassthrough()} | prompt | model | parser)


def simple_chain(model):
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    return prompt | model | StrOutputParser()
