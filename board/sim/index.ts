/** The simulated board: in-memory hal/ implementation plus its terminal and web views. */

export {
  createSimAudio,
  type SimAudioDevice,
  type SimAudioOptions,
  type SimMicrophone,
  type SimSpeakerState,
} from "./sim-audio.ts";
export {
  createSimBoard,
  INDICATOR_NAMES,
  type IndicatorName,
  parseKeys,
  type SimBoard,
  type SimBoardChange,
  type SimBoardOptions,
  type SimBoardSnapshot,
} from "./sim-board.ts";
export {
  attachTerminalView,
  renderTerminalLines,
  type TerminalAction,
  type TerminalInput,
  TerminalKeyDecoder,
  type TerminalOutput,
  type TerminalView,
  type TerminalViewOptions,
} from "./terminal-view.ts";
export { MAX_BODY_BYTES, startWebView, type WebView, type WebViewOptions } from "./web-view.ts";
