// Runs one turn on a live streamchat server with AG-UI's own client, `HttpAgent` from @ag-ui/client:
// its request (RunAgentInput), its SSE parsing, its event verification and the messages it builds.
//
// usage: node agui_client.mjs <url> <token> <thread id> <text> [stop]
// Prints one JSON line: {events, messages, progress, outcome}. With `stop`, it aborts the run
// (`abortRun()`) once a tool reported progress, printing the line STOPPING first.
import { HttpAgent } from "@ag-ui/client";

const [url, token, threadId, text, stop] = process.argv.slice(2);
const agent = new HttpAgent({ url, threadId, headers: { Authorization: `token ${token}` } });
agent.addMessage({ id: "u1", role: "user", content: text });

const events = [];
const progress = []; // each distinct progress state the activity messages showed, in order
let outcome = "none";
let stopped = false;
const subscriber = {
  onEvent({ event }) {
    events.push(event);
  },
  onMessagesChanged({ messages }) {
    for (const m of messages) {
      if (m.role !== "activity") continue;
      const seen = `${m.content.toolCallId}: ${m.content.message}`;
      if (!progress.includes(seen)) progress.push(seen);
      if (stop && !stopped) {
        stopped = true;
        console.log("STOPPING");
        agent.abortRun();
      }
    }
  },
  onRunFinishedEvent({ outcome: finished }) {
    outcome = finished;
  },
  onRunErrorEvent({ event }) {
    outcome = `error: ${event.message}`;
  },
};
try {
  await agent.runAgent({ runId: "run-1" }, subscriber);
} catch (error) {
  if (!stopped) throw error;
}
console.log(JSON.stringify({ events, messages: agent.messages, progress, outcome, stopped }));
