// The same types as the Node package's: one TypeScript source (js/src) for both.
export * from './dist/types/index.js';
