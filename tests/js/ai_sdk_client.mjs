// Reads one turn from a live streamchat server with the AI SDK's own client code: the transport
// `useChat` uses (`DefaultChatTransport`: its request body, its SSE parsing, its part schema) and
// `readUIMessageStream`, which builds the assistant message from the parts as `useChat` does.
//
// usage: node ai_sdk_client.mjs <url> <token> <chat id> <text> [stop|newest-only]
// Prints one JSON line: {sent, chunks, message, progress, errors, aborted}. With `stop`, it aborts the request
// (as `useChat`'s stop() does) once a tool reported progress, printing the line STOPPING first.
// With `newest-only`, the transport sends only the newest message, configured as in the README.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [url, token, chatId, text, option] = process.argv.slice(2);
const stop = option === "stop";
const sent = []; // the request bodies, as the transport posted them
const transport = new DefaultChatTransport({
  api: url,
  fetch: (input, init) => {
    sent.push(JSON.parse(init.body));
    return fetch(input, init);
  },
  headers: { Authorization: `token ${token}` },
  ...(option === "newest-only" && {
    prepareSendMessagesRequest: ({ id, messages }) => ({ body: { id, message: messages[messages.length - 1] } }),
  }),
});
const abort = new AbortController();
const stream = await transport.sendMessages({
  chatId,
  trigger: "submit-message",
  messageId: undefined,
  messages: [{ id: "u1", role: "user", parts: [{ type: "text", text }] }],
  abortSignal: abort.signal,
});

const [forChunks, forMessage] = stream.tee();
const chunks = [];
const collecting = (async () => {
  try {
    for await (const chunk of forChunks) chunks.push(chunk);
  } catch (error) {
    if (!abort.signal.aborted) throw error;
  }
})();

const errors = [];
const progress = []; // each distinct progress state a snapshot of the message showed, in order
let message;
try {
  for await (const snapshot of readUIMessageStream({ stream: forMessage, onError: (e) => errors.push(String(e)) })) {
    message = structuredClone(snapshot);
    for (const part of snapshot.parts) {
      if (part.type !== "data-tool-progress") continue;
      const seen = `${part.id}: ${part.data.message}`;
      if (!progress.includes(seen)) progress.push(seen);
      if (stop && !abort.signal.aborted) {
        console.log("STOPPING");
        abort.abort();
      }
    }
  }
} catch (error) {
  if (!abort.signal.aborted) throw error;
}
await collecting;
console.log(JSON.stringify({ sent, chunks, message, progress, errors, aborted: abort.signal.aborted }));
